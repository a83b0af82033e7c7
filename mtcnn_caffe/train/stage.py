"""Training one MTCNN stage from a packed LMDB: checks, nets, the shared loop, validation, deploy export.

:func:`train_stage` is what ``mtcnn-caffe train`` and ``scripts/train.sh`` run. Everything a user gives is
checked in Python before Caffe sees it (pack, mix, ``--init`` weights, solver state); the loop itself is
:func:`caffe_common.solver.train` (progress, ``log.csv``, atomic snapshots, resume, NaN stop, plot).

Output folder: ``train.prototxt``, ``val.prototxt``, ``solver.prototxt`` (what ran), ``log.csv``,
``loss.png``, ``snapshots/``, and the deploy pair ``det<k>.prototxt`` + ``det<k>.caffemodel`` that
``mtcnn-caffe detect --weights-dir`` takes unchanged.

Fine-tuning from weights without the auxiliary landmark head (the official P- and R-Net have none: their
deploy nets output only face/box) trains with the landmark loss weight at 0 unless ``loss_weights`` is
given. A head starting from its filler sends large random gradients into the pretrained shared layers:
measured on the shared subset's packs, 300 iterations at lr 1e-5 moved the official P-Net's held-out pos
recall from 0.93 to 0.83 with it, and kept 0.92 (neg acc 0.963 -> 0.975, box L2 0.195 -> 0.192) without.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caffe_common import solver as loop
from caffe_common.atomic import atomic_path, write_text_atomic

from ..data.lmdb_io import RecordReader
from ..data.records import LABELS
from ..nets.deploy import deploy_prototxt_text
from ..nets.train import HEADS, RECIPES, StageRecipe, solver_text, train_net
from .batches import BatchPlan, BatchPlanError, Mix, split_counts

VALIDATION_COLUMNS = ("val_loss_cls", "val_pos_recall", "val_neg_acc", "val_box_l2", "val_landmark_nme")


class StageError(ValueError):
    """A stage cannot be trained with these inputs (the message says what to change)."""


@dataclass
class StageResult:
    """What :func:`train_stage` produced."""

    stage: str
    prototxt: Path
    caffemodel: Path
    log: Path
    plot: Path | None
    iterations: int
    seconds: float
    final: dict[str, float]
    notes: tuple[str, ...] = ()

    def summary_line(self) -> str:
        shown = {k: v for k, v in self.final.items() if k.startswith("val_") or k.startswith("loss")}
        figures = " ".join(f"{k}={v:.4g}" for k, v in shown.items() if isinstance(v, float) and math.isfinite(v))
        return f"{self.stage}: {self.iterations} iterations in {self.seconds:.0f} s; {figures}"


# --------------------------------------------------------------------------- checks
def check_pack(pack: str | Path, size: int, recipe: StageRecipe) -> tuple[int, int]:
    """The pack exists, holds ``size`` records and can fill the batch mix; returns ``(train, val)`` counts."""
    try:
        reader = RecordReader(pack)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise StageError(f"--data: {exc}") from exc
    with reader:
        if reader.size != size:
            raise StageError(f"--data {pack}: the pack holds {reader.size}x{reader.size} records, the {size} stage needs "
                             f"{size}x{size} (pack it with gen_net_imdb.py --stage {size})")
        train_count, val_count = split_counts(len(reader))
        if train_count < recipe.batch_size:
            raise StageError(f"--data {pack}: {train_count} training records, fewer than one batch of "
                             f"{recipe.batch_size} (generate more data or lower --batch)")
        mix = Mix.parse(recipe.batch_mix)
        try:
            BatchPlan(reader.read_labels(), train_count, mix, recipe.batch_size, source=str(reader.path))
        except BatchPlanError as exc:
            raise StageError(f"--data: {exc}") from exc
    return train_count, val_count


# --------------------------------------------------------------------------- validation
class HeldOutValidator:
    """Validation figures on the pack's held-out records, with a val net sharing the train net's weights:
    classification accuracy on pos and neg, box-target L2 error (pos + part), landmark NME (landmark
    samples, normalised by the target inter-ocular distance), and the classification loss.

    ``data_transform`` (tests only) rewrites the input blob between the data layer and the net, to show
    that a wrong input convention scores worse.
    """

    columns = VALIDATION_COLUMNS

    def __init__(self, val_prototxt: Path, stage: str, data_transform: Any = None):
        self.val_prototxt, self.heads, self.data_transform = val_prototxt, HEADS[stage], data_transform
        self.net: Any = None

    def __call__(self, source_net: Any, iteration: int = 0) -> dict[str, float]:
        """Figures of the weights of ``source_net`` (a train net, or any net with the same layer names)."""
        self._ensure_net()
        self.net.share_with(source_net)
        return self.figures()

    def figures_of_weights(self, caffemodel: str | Path) -> dict[str, float]:
        """Figures of a weights file (copied by layer name; layers it lacks keep their fillers)."""
        self._ensure_net()
        self.net.copy_from(str(caffemodel))
        return self.figures()

    def _ensure_net(self) -> None:
        if self.net is None:
            from caffe_common.env import import_caffe

            caffe = import_caffe()
            self.net = caffe.Net(str(self.val_prototxt), caffe.TEST)
            self.layer = next(layer for layer in self.net.layers if hasattr(layer, "val_batches"))

    def collect(self) -> dict[str, np.ndarray]:
        """Net outputs and targets of every held-out record, stacked (what :func:`held_out_figures` takes)."""
        self.layer.set_iteration(0)
        batches = [self._forward() for _ in range(self.layer.val_batches())]
        return {k: np.concatenate([b[k] for b in batches])[: self.layer.val_count] for k in batches[0]}

    def figures(self) -> dict[str, float]:
        return held_out_figures(self.collect())

    def _forward(self) -> dict[str, np.ndarray]:
        if self.data_transform is None:
            self.net.forward()
        else:
            self.net._forward(0, 0)  # the data layer alone, then the rest on the rewritten input
            self.net.blobs["data"].data[...] = self.data_transform(self.net.blobs["data"].data)
            self.net._forward(1, len(self.net.layers) - 1)
        blobs = self.net.blobs
        count = len(blobs["label"].data)
        out = {"label": blobs["label"].data.copy(), "logits": blobs[self.heads.cls].data.reshape(count, -1).copy(),
               "box": blobs[self.heads.box].data.reshape(count, 4).copy(), "roi": blobs["roi"].data.copy()}
        if self.heads.landmark in blobs:
            out["points"] = blobs[self.heads.landmark].data.reshape(count, 10).copy()
            out["pts"] = blobs["pts"].data.copy()
        return out


def held_out_figures(b: dict[str, np.ndarray]) -> dict[str, float]:
    """The validation columns from stacked net outputs and targets (NaN where a sample type is absent)."""
    label = b["label"]
    logits = b["logits"].astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    cls = (label == LABELS["pos"]) | (label == LABELS["neg"])
    predicted = np.argmax(logits, 1)
    pos, neg = label == LABELS["pos"], label == LABELS["neg"]
    boxes = pos | (label == LABELS["part"])
    figures = {
        "val_loss_cls": float(-log_prob[cls, label[cls].astype(int)].mean()) if cls.any() else math.nan,
        "val_pos_recall": float((predicted[pos] == 1).mean()) if pos.any() else math.nan,
        "val_neg_acc": float((predicted[neg] == 0).mean()) if neg.any() else math.nan,
        "val_box_l2": float(np.linalg.norm(b["box"][boxes] - b["roi"][boxes], axis=1).mean()) if boxes.any() else math.nan,
        "val_landmark_nme": math.nan,
    }
    marks = label == LABELS["landmark"]
    if "points" in b and marks.any():
        pred, true = b["points"][marks], b["pts"][marks]          # x1..x5, y1..y5
        error = np.hypot(pred[:, :5] - true[:, :5], pred[:, 5:] - true[:, 5:]).mean(1)
        inter_ocular = np.hypot(true[:, 0] - true[:, 1], true[:, 5] - true[:, 6])
        figures["val_landmark_nme"] = float(np.mean(error / np.maximum(inter_ocular, 1e-6)))
    return figures


# --------------------------------------------------------------------------- export
def export_deploy(stage: str, trained: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out>/<stage>.prototxt`` + ``.caffemodel``: the deploy net with the trained weights
    (copied by layer name; the training-only heads are left out)."""
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    prototxt = write_text_atomic(out_dir / f"{stage}.prototxt", deploy_prototxt_text(stage))
    net = caffe.Net(str(prototxt), caffe.TEST)
    net.copy_from(str(trained))
    model = out_dir / f"{stage}.caffemodel"
    with atomic_path(model, suffix=".caffemodel") as tmp:
        net.save(str(tmp))
    return prototxt, model


# --------------------------------------------------------------------------- the stage
def stage_recipe(size: int, **options: Any) -> StageRecipe:
    """The default recipe of ``size`` with the given options (``None`` keeps a default)."""
    if size not in RECIPES:
        raise StageError(f"stage must be 12, 24 or 48, got {size}")
    recipe = RECIPES[size].with_options(**options)
    if recipe.tasks not in ("all", "cls"):
        raise StageError(f"--tasks must be 'all' or 'cls', got {recipe.tasks!r}")
    weights = tuple(recipe.loss_weights)
    if len(weights) != 3 or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights) \
            or not any(weights):
        raise StageError(f"--loss-weights must be 3 numbers >= 0 (cls, box, landmark), not all 0; got {weights}")
    if not 0 < recipe.ohem <= 1:
        raise StageError(f"--ohem must be in (0, 1], got {recipe.ohem}")
    if recipe.batch_size < 2 or recipe.max_iter < 1 or not (math.isfinite(recipe.base_lr) and recipe.base_lr > 0):
        raise StageError("--batch must be >= 2, --max-iter >= 1 and --base-lr a positive number")
    Mix.parse(recipe.mix)
    return recipe


def init_lacks_landmark_head(init: str | Path, stage: str) -> bool:
    """True when the ``init`` weights hold no landmark head for ``stage`` (e.g. the official det1/det2)."""
    from caffe_common.model_files import CaffeModelError, read_caffemodel, weights_by_layer

    try:
        return HEADS[stage].landmark not in weights_by_layer(read_caffemodel(init))
    except CaffeModelError as exc:
        raise StageError(f"--init {init}: {exc}") from exc


def train_stage(size: int, pack: str | Path, out_dir: str | Path, *, init: str | Path | None = None,
                resume: str | Path | None = None, validate_every: int | None = None, progress: bool = True,
                **options: Any) -> StageResult:
    """Train stage ``size`` (12, 24, 48) on ``pack``; see the module docstring. ``options``: fields of
    :class:`~mtcnn_caffe.nets.train.StageRecipe` (``max_iter``, ``batch_size``, ``base_lr``, ``ohem``,
    ``tasks``, ``mix``, ``seed``)."""
    try:
        recipe = stage_recipe(size, **options)
    except BatchPlanError as exc:
        raise StageError(f"--mix: {exc}") from exc
    check_pack(pack, size, recipe)
    notes = []
    if (init and options.get("loss_weights") is None and recipe.tasks == "all" and recipe.loss_weights[2]
            and not HEADS[recipe.stage].landmark_is_official and init_lacks_landmark_head(init, recipe.stage)):
        recipe = recipe.with_options(loss_weights=(*recipe.loss_weights[:2], 0.0))
        notes.append(f"--init {init} has no landmark head ({HEADS[recipe.stage].landmark}): landmark loss weight 0 "
                     "(a fresh head would disturb the pretrained layers; --loss-weights overrides)")
    out_dir = loop.prepare_out_dir(Path(out_dir))
    recipe = recipe.with_options(source=str(Path(pack).resolve()))
    train_file = write_text_atomic(out_dir / "train.prototxt", str(train_net(recipe, "train")))
    val_file = write_text_atomic(out_dir / "val.prototxt", str(train_net(recipe, "val")))
    solver_file = write_text_atomic(out_dir / "stage_solver.prototxt", solver_text(recipe, str(train_file)))
    if resume is not None and Path(resume).is_dir():
        found = loop.latest_snapshot(resume)
        if found is None:
            raise StageError(f"--resume {resume}: no snapshot in {Path(resume) / loop.SNAPSHOT_DIR}")
        resume = found
    every = validate_every if validate_every is not None else max(1, min(500, recipe.max_iter // 10))
    config = loop.TrainConfig(solver=solver_file, out_dir=out_dir, init_weights=[Path(init)] if init else [],
                              resume=Path(resume) if resume else None, seed=recipe.seed,
                              snapshot_every=max(1, recipe.max_iter // 10), log_every=10 if recipe.max_iter > 200 else 1,
                              validate_every=every, validation_columns=VALIDATION_COLUMNS, progress=progress)
    result = loop.train(config, validate=HeldOutValidator(val_file, recipe.stage))
    prototxt, model = export_deploy(recipe.stage, result.weights, out_dir)
    return StageResult(recipe.stage, prototxt, model, result.log, result.plot, result.iterations, result.seconds,
                       result.last_row, tuple(notes))
