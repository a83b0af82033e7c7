#!/usr/bin/env bash
# Accuracy of a face-network model folder on the held-out WIDER event and the 5-point test list, with the
# toolkit's own evaluators (the same ones the MTCNN rows of bench/RESULTS.md use):
#
#   bench/face_accuracy.sh MODEL_DIR OUT_DIR [SIZE ...]
#
# A SIZE is one input side or several joined by commas (320,640: both passes merged, `--size 320 640`).
# For each SIZE (default: the model's detect_sizes): `detect-faces --conf 0.05 --wider-out` on every image of the
# held-out event, then `mtcnn-caffe eval wider` (setting all) on all detections and on those scoring >= 0.5
# (the model's default threshold); `detect-faces --json` on the landmark test images, then
# `mtcnn-caffe eval landmarks` (inter-ocular NME). Results land in OUT_DIR/<size>/ (eval reports, JSON);
# a summary line per size goes to stdout. Environment: HELD_OUT_GT (default: the ground truth that
# train-faces wrote, MODEL_DIR/data/held_out_gt.txt, else ../shared's Interview split is needed),
# WIDER (the wider_train_subset root), LANDMARKS (the landmarks_5pt root), EVENT (13--Interview),
# BACKEND (caffe), FIT (pad or squash; default: the model's). Run with one BLAS thread per process for comparable times:
#   OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 bench/face_accuracy.sh output/face_run output/face_acc 320 480
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL=${1:?usage: bench/face_accuracy.sh MODEL_DIR OUT_DIR [SIZE ...]}
OUT=${2:?usage: bench/face_accuracy.sh MODEL_DIR OUT_DIR [SIZE ...]}
shift 2
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=("$(.venv/bin/python -c "import json,sys; i = json.load(open(sys.argv[1]))['input']; print(','.join(map(str, i.get('detect_sizes', i['size'][:1]))))" "$MODEL/face_model.json")")
WIDER=${WIDER:-../shared/data/wider_train_subset}
LANDMARKS=${LANDMARKS:-../shared/data/landmarks_5pt}
EVENT=${EVENT:-13--Interview}
BACKEND=${BACKEND:-caffe}
FIT_OPTION=()
[ -z "${FIT:-}" ] || FIT_OPTION=(--fit "$FIT")
GT=${HELD_OUT_GT:-$MODEL/data/held_out_gt.txt}
[ -f "$GT" ] || { echo "error: no held-out ground truth at $GT (set HELD_OUT_GT)" >&2; exit 2; }
mkdir -p "$OUT"
# The landmark test images, once, as absolute paths (the list's paths are relative to its folder).
LMK_LIST=$OUT/landmark_images.txt
cut -d' ' -f1 "$LANDMARKS/testImageList.txt" | sort -u | sed "s#^#$(realpath "$LANDMARKS")/#" > "$LMK_LIST"

for SIZE in "${SIZES[@]}"; do
    O=$OUT/$SIZE
    rm -rf "$O" && mkdir -p "$O"
    t0=$(date +%s.%N)
    .venv/bin/ssd-mobilenet detect-faces --model-dir "$MODEL" --size ${SIZE//,/ } --backend "$BACKEND" "${FIT_OPTION[@]}" --conf 0.05 \
        --wider-out "$O/pred_all" --no-progress "$WIDER/WIDER_train/images/$EVENT"
    t1=$(date +%s.%N)
    # The same detections cut at the model's default threshold (0.5): WIDER files keep their two header lines.
    .venv/bin/python - "$O/pred_all" "$O/pred_05" <<'PY'
import sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in src.rglob("*.txt"):
    lines = path.read_text().splitlines()
    kept = [line for line in lines[2:] if line.strip() and float(line.split()[4]) >= 0.5]
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([lines[0], str(len(kept)), *kept]) + "\n")
PY
    .venv/bin/mtcnn-caffe eval wider --pred "$O/pred_all" --gt "$GT" --out "$O/wider_all" > "$O/wider_all.txt"
    .venv/bin/mtcnn-caffe eval wider --pred "$O/pred_05" --gt "$GT" --out "$O/wider_05" > "$O/wider_05.txt"
    .venv/bin/ssd-mobilenet detect-faces --model-dir "$MODEL" --size ${SIZE//,/ } --backend "$BACKEND" "${FIT_OPTION[@]}" --conf 0.05 \
        --json "$O/landmarks.jsonl" --no-progress "@$LMK_LIST"
    .venv/bin/mtcnn-caffe eval landmarks --pred "$O/landmarks.jsonl" --gt "$LANDMARKS/testImageList.txt" \
        --images "$LANDMARKS" --out "$O/landmarks" > "$O/landmarks.txt"
    images=$(find "$O/pred_all" -name '*.txt' | wc -l)
    echo "size $SIZE ($BACKEND): $images held-out images in $(.venv/bin/python -c "print(f'{$t1 - $t0:.0f}')") s;" \
         "WIDER all: $(tail -n 1 "$O/wider_all.txt"); WIDER conf>=0.5: $(tail -n 1 "$O/wider_05.txt");" \
         "landmarks: $(tail -n 1 "$O/landmarks.txt")"
done
