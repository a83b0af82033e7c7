"""The whole cascade command on tiny synthetic data: every step runs once, the weights folder drives the
detector through all three stages, and a second run skips every finished step."""
from __future__ import annotations

import json

import numpy as np

from mtcnn_caffe.train.cascade import CascadeInputs, CascadeOptions, split_wider_annotations, train_cascade

from .test_data_samples import make_landmarks, make_wider

def test_cascade_runs_every_step_once_and_resumes_by_skipping(tmp_path):
    anno, images = make_wider(tmp_path / "wider")
    landmarks, landmark_images = make_landmarks(tmp_path / "lm")
    inputs = CascadeInputs(anno, images, landmarks, landmark_images)
    # Untrained nets find nothing at the official thresholds: mine with all windows instead.
    options = CascadeOptions({12: 4, 24: 4, 48: 4}, {12: 32, 24: 32, 48: 16}, jobs=1, progress=False,
                             mining_thresholds=(0.0, 0.0, 0.0))
    messages: list[str] = []
    summary = train_cascade(inputs, tmp_path / "out", options, log=messages.append)
    steps = ["12/random", "12/landmark", "12/pack", "12/train", "24/random", "24/landmark", "24/hard", "24/pack",
             "24/train", "48/random", "48/landmark", "48/hard", "48/pack", "48/train"]
    assert list(summary["steps"]) == steps
    assert summary["steps"]["24/hard"]["neg"] > 0 and summary["steps"]["48/train"]["iterations"] == 4
    recorded = json.loads((tmp_path / "out" / "cascade.json").read_text())["steps"]
    assert list(recorded) == steps
    from mtcnn_caffe import MtcnnDetector

    detector = MtcnnDetector(weights_dir=tmp_path / "out" / "weights", thresholds=(0.0, 0.0, 0.0), min_size=40)
    boxes, points = detector.detect_arrays(np.full((80, 80, 3), 100, np.uint8))
    assert boxes.shape[1] == 5 and points.shape[1:] == (5, 2)
    again: list[str] = []
    train_cascade(inputs, tmp_path / "out", options, log=again.append)
    assert again == [f"[cascade] {name}: done before, skipped" for name in steps]

def test_held_out_events_are_split_from_the_annotation(tmp_path):
    anno = tmp_path / "gt.txt"
    anno.write_text("0--A/a.jpg\n1\n1 2 30 40 0 0 0 0 0 0\n13--Interview/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
                    "13--Interview/c.jpg\n2\n5 5 20 20 1 0 0 0 0 0\n9 9 30 30 0 0 0 1 0 0\n")
    train, test = split_wider_annotations(anno, ["Interview"], tmp_path / "split")
    assert train.read_text().split("\n")[:3] == ["0--A/a.jpg", "1", "1 2 30 40 0 0 0 0 0 0"]
    assert "13--Interview/b.jpg" in test.read_text() and "0--A" not in test.read_text()
    from mtcnn_caffe.annotations import read_wider_gt

    items = read_wider_gt(test).items
    assert [i.name for i in items] == ["13--Interview/b.jpg", "13--Interview/c.jpg"]
    np.testing.assert_array_equal(items[1].attrs[1], [0, 0, 0, 1, 0, 0])


def test_shipped_cascade_matches_its_manifest_and_finds_faces(shared_dir):
    import hashlib
    from pathlib import Path

    import cv2

    from mtcnn_caffe import MtcnnDetector

    folder = Path(__file__).resolve().parents[1] / "models" / "mtcnn_wider_subset"
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    for name, digest in manifest["files_sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert manifest["command"].startswith("scripts/train_cascade.sh") and manifest["stages"]["48/train"]["iterations"]
    image = cv2.imread(str(shared_dir / "data" / "faces_68pt" / "2008_002470.jpg"))
    faces = MtcnnDetector(weights_dir=folder).detect(image)
    assert len(faces) >= 1 and all(0.7 <= f.score <= 1 for f in faces)
