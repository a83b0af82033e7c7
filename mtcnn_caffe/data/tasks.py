"""The three generators (random crops, landmark samples, hard examples) as pipeline tasks,
and the functions the ``prepare_data`` scripts call."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..annotations import read_celeba, read_landmark_list, read_wider_gt
from .images import load_image
from .landmarks import LandmarkParams, landmark_samples
from .mining import STAGES_FOR_SIZE, MiningParams, hard_example_samples, make_detector
from .pipeline import ItemResult, params_dict, run_generator
from .records import check_size, empty_samples
from .wider import CropParams, random_crop_samples, select_faces


class WiderCropTask:
    """Random pos/part/neg crops of WIDER FACE images (``gen_12net_data`` / 24 / 48)."""

    kind = "wider_random"

    def __init__(self, anno: str | Path, images: str | Path, size: int, params: CropParams, limit: int | None = None):
        self.anno, self.images, self.size, self.params = str(anno), str(images), check_size(size), params
        parsed = read_wider_gt(anno)
        self.items = parsed.items[:limit] if limit else parsed.items
        self.annotation_errors = parsed.errors

    def __len__(self) -> int:
        return len(self.items)

    def config(self) -> dict[str, Any]:
        return {"anno": self.anno, "images": self.images, "items": len(self.items), "params": params_dict(self.params)}

    def setup(self) -> None:
        pass

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        item = self.items[index]
        selection = select_faces(item, self.params.min_face, self.params.keep_invalid)
        image, failure = load_image(Path(self.images) / item.name)
        if image is None:
            return ItemResult(empty_samples(self.size), dict(selection.skipped), failure)
        samples = random_crop_samples(image, selection, rng, self.size, self.params, index)
        return ItemResult(samples, dict(selection.skipped))


class LandmarkTask:
    """Augmented landmark samples of a 5-point list (``gen_landmark_data``)."""

    kind = "landmark"

    def __init__(self, list_path: str | Path | None, images: str | Path, size: int, params: LandmarkParams,
                 limit: int | None = None, celeba: tuple[str | Path, str | Path] | None = None):
        """Faces from a 5-point list (``list_path``) or from CelebA's two list files (``celeba``)."""
        if (list_path is None) == (celeba is None):
            raise ValueError("give either a 5-point list or the CelebA bbox + landmark files")
        self.images, self.size, self.params = str(images), check_size(size), params
        if celeba is not None:
            self.source = {"celeba": [str(celeba[0]), str(celeba[1])]}
            parsed = read_celeba(*celeba)
        else:
            self.source = {"list": str(list_path)}
            parsed = read_landmark_list(list_path)
        self.items = parsed.items[:limit] if limit else parsed.items
        self.annotation_errors = parsed.errors

    def __len__(self) -> int:
        return len(self.items)

    def config(self) -> dict[str, Any]:
        return {**self.source, "images": self.images, "items": len(self.items), "params": params_dict(self.params)}

    def setup(self) -> None:
        pass

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        face = self.items[index]
        w, h = face.box[2] - face.box[0], face.box[3] - face.box[1]
        if min(w, h) < self.params.min_face:
            return ItemResult(empty_samples(self.size), {"too_small": 1})
        image, failure = load_image(Path(self.images) / face.image)
        if image is None:
            return ItemResult(empty_samples(self.size), {}, failure)
        samples = landmark_samples(image, face, rng, self.size, self.params, index)
        return ItemResult(samples, {} if len(samples) else {"no_crop_keeps_points": 1})


class HardExampleTask:
    """Detections of the previous stage(s) on WIDER FACE images, labelled (``gen_hard_example``)."""

    kind = "hard_example"

    def __init__(self, anno: str | Path, images: str | Path, size: int, params: MiningParams, limit: int | None = None,
                 detector: Any = None):
        if size not in STAGES_FOR_SIZE:
            raise ValueError(f"--stage must be 24 or 48, not {size}")
        self.anno, self.images, self.size, self.params = str(anno), str(images), size, params
        parsed = read_wider_gt(anno)
        self.items = parsed.items[:limit] if limit else parsed.items
        self.annotation_errors = parsed.errors
        self._detector = detector  # injected (tests) or built per process in setup()
        if detector is None:
            self._check_weights()

    def _check_weights(self) -> None:
        """Fail early, in the main process, if a stage's prototxt/caffemodel is missing."""
        from ..weights import resolve_weights_dir, stage_files

        weights = resolve_weights_dir(self.params.weights_dir)
        for stage in ("det1", "det2")[:STAGES_FOR_SIZE[self.size]]:
            stage_files(weights, stage)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None  # each worker builds its own Caffe nets
        return state

    def __len__(self) -> int:
        return len(self.items)

    def config(self) -> dict[str, Any]:
        weights = self.params.weights_dir or "default"
        return {"anno": self.anno, "images": self.images, "items": len(self.items), "weights": weights,
                "params": params_dict(self.params)}

    def setup(self) -> None:
        if self._detector is None:
            self._detector = make_detector(self.params)

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        item = self.items[index]
        selection = select_faces(item, self.params.min_face, self.params.keep_invalid)
        image, failure = load_image(Path(self.images) / item.name)
        if image is None:
            return ItemResult(empty_samples(self.size), dict(selection.skipped), failure)
        samples = hard_example_samples(image, selection, self._detector, self.size, rng, self.params, index)
        return ItemResult(samples, dict(selection.skipped))


def _annotation_stats(task: Any) -> dict[str, Any]:
    errors = list(task.annotation_errors)
    return {"annotation_errors": len(errors), "annotation_error_list": errors[:200]}


def generate(task: Any, out: str | Path, seed: int = 0, jobs: int | None = None, overwrite: bool = False,
             progress: bool = True, chunk_images: int = 64) -> dict[str, Any]:
    """Run one task into ``out`` (resumable); report unparsable annotation lines on stderr."""
    import sys

    for message in task.annotation_errors[:20]:
        print(f"warning: skipped annotation line: {message}", file=sys.stderr)
    if len(task.annotation_errors) > 20:
        print(f"warning: ... {len(task.annotation_errors) - 20} more skipped annotation lines", file=sys.stderr)
    return run_generator(task, out, seed=seed, jobs=jobs, chunk_images=chunk_images, overwrite=overwrite,
                         progress=progress, extra_stats=_annotation_stats(task))
