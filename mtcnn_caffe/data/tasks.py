"""The three generators (random crops, landmark samples, hard examples) as pipeline tasks,
and the functions the ``prepare_data`` scripts call."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..annotations import read_celeba, read_landmark_list, read_wider_gt
from .images import load_image
from .landmarks import LandmarkParams, landmark_samples
from .mining import STAGES_FOR_SIZE, MiningParams, hard_example_samples, make_detector
from .pipeline import EmptyInputError, ItemResult, check_limit, params_dict, run_generator
from .records import check_size, empty_samples
from .wider import CropParams, FaceSelection, random_crop_samples, select_faces


def check_inputs(items: Sequence[Any], empty_message: str, errors: Sequence[str], images: str | Path,
                 names: Sequence[str]) -> None:
    """Refuse inputs that cannot give a sample: no items, no ``images`` folder, none of the images present.

    ``names`` are the items' image paths relative to ``images``; the search stops at the first one found.
    """
    if not items:
        skipped = f" ({len(errors)} unparsable lines, first: {errors[0]})" if errors else " (empty file?)"
        raise EmptyInputError(empty_message + skipped)
    root = Path(images)
    if not root.is_dir():
        raise EmptyInputError(f"--images {root}: not a directory")
    if not any((root / name).is_file() for name in names):
        raise EmptyInputError(f"none of the {len(set(names))} annotated images is under --images {root} "
                              f"(first expected: {root / names[0]})")


class _WiderTask:
    """Common part of the tasks over WIDER FACE images: one item per annotated image."""

    kind = "wider"
    size: int
    params: Any

    def __init__(self, anno: str | Path, images: str | Path, limit: int | None = None):
        self.anno, self.images = str(anno), str(images)
        parsed = read_wider_gt(anno)
        self.items = parsed.items[:check_limit(limit)]
        self.annotation_errors = parsed.errors
        check_inputs(self.items, f"{anno}: no image annotations", parsed.errors, images,
                     [item.name for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def config(self) -> dict[str, Any]:
        """Inputs and parameters (the manifest compares them on resume)."""
        return {"anno": self.anno, "images": self.images, "items": len(self.items), "params": params_dict(self.params)}

    def setup(self) -> None:
        """Nothing to prepare per process."""

    def _load(self, index: int) -> tuple[FaceSelection, np.ndarray | None, str | None]:
        item = self.items[index]
        selection = select_faces(item, self.params.min_face, self.params.keep_invalid)
        image, failure = load_image(Path(self.images) / item.name)
        return selection, image, failure


class WiderCropTask(_WiderTask):
    """Random pos/part/neg crops of WIDER FACE images (``gen_12net_data`` / 24 / 48)."""

    kind = "wider_random"

    def __init__(self, anno: str | Path, images: str | Path, size: int, params: CropParams, limit: int | None = None):
        super().__init__(anno, images, limit)
        self.size, self.params = check_size(size), params

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        """Random crops of image ``index``."""
        selection, image, failure = self._load(index)
        if image is None:
            return ItemResult(empty_samples(self.size), dict(selection.skipped), failure)
        return ItemResult(random_crop_samples(image, selection, rng, self.size, self.params, index),
                          dict(selection.skipped))


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
        self.items = parsed.items[:check_limit(limit)]
        self.annotation_errors = parsed.errors
        where = " + ".join(str(p) for p in celeba) if celeba is not None else str(list_path)
        check_inputs(self.items, f"{where}: no annotated faces", parsed.errors, images,
                     [face.image for face in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def config(self) -> dict[str, Any]:
        """Inputs and parameters (the manifest compares them on resume)."""
        return {**self.source, "images": self.images, "items": len(self.items), "params": params_dict(self.params)}

    def setup(self) -> None:
        """Nothing to prepare per process."""

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        """Augmented samples of face ``index``."""
        face = self.items[index]
        w, h = face.box[2] - face.box[0], face.box[3] - face.box[1]
        if min(w, h) < self.params.min_face:
            return ItemResult(empty_samples(self.size), {"too_small": 1})
        image, failure = load_image(Path(self.images) / face.image)
        if image is None:
            return ItemResult(empty_samples(self.size), {}, failure)
        samples = landmark_samples(image, face, rng, self.size, self.params, index)
        return ItemResult(samples, {} if len(samples) else {"no_crop_keeps_points": 1})


class HardExampleTask(_WiderTask):
    """Detections of the previous stage(s) on WIDER FACE images, labelled (``gen_hard_example``)."""

    kind = "hard_example"

    def __init__(self, anno: str | Path, images: str | Path, size: int, params: MiningParams, limit: int | None = None,
                 detector: Any = None):
        """``detector``: injected (tests); by default each process builds its own in :meth:`setup`."""
        if size not in STAGES_FOR_SIZE:
            raise ValueError(f"--stage must be 24 or 48, not {size}")
        super().__init__(anno, images, limit)
        self.size, self.params = size, params
        self._detector = detector
        if detector is None:
            self._check_weights()

    def _check_weights(self) -> None:
        """Fail early, in the main process, if a stage's prototxt/caffemodel is missing."""
        from ..nets.weights import resolve_weights_dir, stage_files

        weights = resolve_weights_dir(self.params.weights_dir)
        for stage in ("det1", "det2")[:STAGES_FOR_SIZE[self.size]]:
            stage_files(weights, stage)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_detector"] = None  # each worker builds its own nets
        return state

    def config(self) -> dict[str, Any]:
        """Inputs, weights and detector settings."""
        return {**super().config(), "weights": self.params.weights_dir or "default"}

    def setup(self) -> None:
        """Load the detector's nets in this process."""
        if self._detector is None:
            self._detector = make_detector(self.params)

    def run(self, index: int, rng: np.random.Generator) -> ItemResult:
        """Labelled detections of image ``index``."""
        selection, image, failure = self._load(index)
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
