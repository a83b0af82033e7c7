"""The whole cascade from annotations to ``--weights-dir``: data for 12 -> train P-Net -> mine with it ->
data for 24 -> train R-Net -> mine with P+R -> data for 48 -> train O-Net, then evaluation.

Output folder layout::

    DIR/data/<12|24|48>/{random,landmark,hard,pack}   generator outputs and packs
    DIR/stages/<12|24|48>/                             one stage's training run (log.csv, loss.png, snapshots)
    DIR/weights/det{1,2,3}.{prototxt,caffemodel}       the cascade, ready for `mtcnn-caffe detect --weights-dir`
    DIR/cascade.json                                   steps done, counts and times (atomic)
    DIR/eval/                                          WIDER AP and landmark NME when ground truth is given

Every step is recorded in ``cascade.json`` when it finishes; a re-run skips finished steps and resumes an
interrupted training from its newest snapshot, so the whole job survives a stop.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from caffe_common.atomic import write_json_atomic, write_text_atomic
from caffe_common.solver import latest_snapshot

from ..annotations import read_wider_gt, split_wider_annotations

STAGE_NAMES = {12: "det1", 24: "det2", 48: "det3"}


@dataclass
class CascadeInputs:
    """Annotations and images the cascade is trained from (and, optionally, evaluated on)."""

    wider_anno: Path
    wider_images: Path
    landmarks: Path
    landmark_images: Path
    held_out_events: Sequence[str] = ()          # WIDER events kept out of training, evaluated at the end
    landmark_test: Path | None = None            # a 5-point list evaluated at the end (NME)
    image_limit: int | None = None               # WIDER images per generator (None: all)


@dataclass
class CascadeOptions:
    """Per-stage training sizes and the shared settings."""

    iterations: dict[int, int] = field(default_factory=dict)   # stage size -> max_iter (default: the recipes')
    batch: dict[int, int] = field(default_factory=dict)
    seed: int = 0
    jobs: int | None = None
    mining_backend: str = "opencv"                              # same nets as Caffe, faster
    mining_thresholds: tuple[float, float, float] | None = None  # default: the detector's official ones
    progress: bool = True


class CascadeState:
    """``cascade.json``: finished steps with their summaries, rewritten atomically after each step."""

    def __init__(self, path: Path):
        self.path = path
        self.steps: dict[str, Any] = json.loads(path.read_text())["steps"] if path.is_file() else {}

    def done(self, step: str) -> bool:
        return step in self.steps

    def record(self, step: str, summary: dict[str, Any]) -> None:
        self.steps[step] = summary
        write_json_atomic(self.path, {"steps": self.steps})


def _timed(step: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def train_cascade(inputs: CascadeInputs, out_dir: str | Path, options: CascadeOptions | None = None,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Run (or continue) the whole cascade; returns the contents of ``cascade.json``."""
    from ..data import pack
    from ..data.landmarks import LandmarkParams
    from ..data.mining import MiningParams
    from ..data.tasks import HardExampleTask, LandmarkTask, WiderCropTask, generate
    from ..data.wider import CropParams
    from .stage import train_stage

    options = options or CascadeOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = CascadeState(out / "cascade.json")
    weights = out / "weights"
    train_anno, held_out_anno = split_wider_annotations(Path(inputs.wider_anno), inputs.held_out_events, out / "data")

    def step(name: str, run: Callable[[], dict[str, Any]]) -> None:
        if state.done(name):
            log(f"[cascade] {name}: done before, skipped")
            return
        log(f"[cascade] {name} ...")
        summary, seconds = _timed(run)
        state.record(name, {**summary, "seconds": round(seconds, 1)})
        log(f"[cascade] {name}: {seconds:.0f} s")

    def gen(task: Any, target: Path) -> dict[str, Any]:
        stats = generate(task, target, seed=options.seed, jobs=options.jobs, progress=options.progress)
        return {k: stats.get(k) for k in ("pos", "part", "neg", "landmark")}

    for size in (12, 24, 48):
        data = out / "data" / str(size)
        sources = [data / "random", data / "landmark"]
        step(f"{size}/random", lambda: gen(WiderCropTask(train_anno, inputs.wider_images, size, CropParams(),
                                                         inputs.image_limit), data / "random"))
        step(f"{size}/landmark", lambda: gen(LandmarkTask(inputs.landmarks, inputs.landmark_images, size,
                                                          LandmarkParams()), data / "landmark"))
        if size > 12:
            mining = MiningParams(weights_dir=str(weights), backend=options.mining_backend)
            if options.mining_thresholds is not None:
                mining = dataclasses.replace(mining, thresholds=tuple(options.mining_thresholds))
            step(f"{size}/hard", lambda: gen(HardExampleTask(train_anno, inputs.wider_images, size, mining,
                                                             inputs.image_limit), data / "hard"))
            sources.append(data / "hard")
        step(f"{size}/pack", lambda: _pack_summary(pack.pack_stage(size, sources, data / "pack", seed=options.seed,
                                                                   progress=options.progress)))
        step(f"{size}/train", lambda: _train(size, data / "pack", out / "stages" / str(size), weights, options,
                                             train_stage))
    if held_out_anno is not None:
        step("eval/wider", lambda: evaluate_wider(weights, held_out_anno, inputs.wider_images, out / "eval"))
    if inputs.landmark_test is not None:
        step("eval/landmarks", lambda: evaluate_landmarks(weights, inputs.landmark_test, inputs.landmark_images,
                                                          out / "eval"))
    return {"steps": state.steps}


def _pack_summary(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats.get(k) for k in ("pos", "part", "neg", "landmark", "count") if k in stats}


def _train(size: int, pack_dir: Path, stage_dir: Path, weights: Path, options: CascadeOptions, train_stage) -> dict:
    resume = latest_snapshot(stage_dir) if stage_dir.is_dir() else None
    result = train_stage(size, pack_dir, stage_dir, resume=resume, progress=options.progress, seed=options.seed,
                         max_iter=options.iterations.get(size), batch_size=options.batch.get(size))
    weights.mkdir(parents=True, exist_ok=True)
    for path in (result.prototxt, result.caffemodel):
        shutil.copyfile(path, weights / f".{path.name}.tmp")
        (weights / f".{path.name}.tmp").replace(weights / path.name)
    return {"iterations": result.iterations, "train_seconds": round(result.seconds, 1),
            **{k: v for k, v in result.final.items() if k != "iter"}}


def evaluate_wider(weights: Path, gt: Path, images: Path, out: Path) -> dict[str, Any]:
    """Detect on the held-out WIDER images with the trained cascade and the official weights; AP (setting all)."""
    return {"trained": evaluate_wider_ap(weights, gt, images, out / "trained"),
            "official": evaluate_wider_ap(None, gt, images, out / "official")}


def evaluate_wider_ap(weights_dir: Path | None, gt: Path, images: Path, out: Path) -> float:
    """WIDER AP (setting ``all`` of a ``*_bbx_gt.txt``) of the cascade in ``weights_dir`` (None: the default
    weights) on the images of ``gt``, detected with the official settings."""
    from ..evaluation.reports import wider_report

    predictions = out / "predictions"
    _detect_wider(weights_dir, gt, images, predictions)
    report = wider_report(predictions, gt, out)
    return float(report.summary["ap"]["all"])


def _detect_wider(weights_dir: Path | None, gt: Path, images: Path, predictions: Path) -> None:
    from caffe_common.images import read_image

    from ..detect.cascade import MtcnnDetector
    from ..detect.io import write_wider_result

    detector = MtcnnDetector(weights_dir=weights_dir, backend="opencv")
    for item in read_wider_gt(gt).items:
        path = Path(images) / item.name
        write_wider_result(predictions, path, detector.detect(read_image(path)))


def evaluate_landmarks(weights: Path, test_list: Path, images: Path, out: Path) -> dict[str, Any]:
    """5-point NME of the trained cascade and of the official weights on ``test_list``."""
    from caffe_common.images import read_image

    from ..annotations import read_landmark_list
    from ..detect.cascade import MtcnnDetector
    from ..detect.io import face_record
    from ..evaluation.reports import landmarks_report

    results = {}
    faces = read_landmark_list(test_list).items
    for name, weights_dir in (("trained", weights), ("official", None)):
        detector = MtcnnDetector(weights_dir=weights_dir, backend="opencv")
        lines = []
        for path in dict.fromkeys(Path(images) / face.image for face in faces):
            image = read_image(path)
            lines.append(json.dumps(face_record(path, image, detector.detect(image))))
        jsonl = write_text_atomic(out / f"landmarks_{name}.jsonl", "\n".join(lines) + "\n")
        report = landmarks_report(jsonl, test_list, images, out / name, "inter-ocular", 0.3, False)
        results[name] = report.line
    return results
