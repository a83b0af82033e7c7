"""Train an SSD net (MobileNet-SSD or any Caffe SSD train net) with the shared training loop.

Before Caffe sees anything, the inputs the solver names are checked here: the train net's
``AnnotatedData`` LMDB (present, ``AnnotatedDatum`` records, object labels inside the net's classes),
its label map (parses, background 0, as many classes as ``MultiBoxLoss.num_classes``) and the
heads against the prior boxes; Caffe would abort on any of these mid-setup.

Caffe's own test phase (``test_interval``) is replaced by :class:`~ssd_mobilenet.evaluation.SsdTester`
every ``test_every`` iterations: one exact pass over the whole test LMDB with the train net's current
weights, its mAP (``DetectionEvaluate``, VOC07 11-point) written to the log as ``map``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from caffe_common.model_files import (TRAIN_PHASE, CaffeModelError, only_layer, path_in_prototxt, phase_layers,
                                      read_net_prototxt)
from caffe_common.solver import (TrainConfig, TrainingError, TrainResult, latest_snapshot, read_solver,
                                 train, train_net_path, _resolve_net_path)

#: Iterations between test passes when the solver sets no ``test_interval``.
DEFAULT_TEST_EVERY = 1000
_TRAIN_NET_HINT = "counting the TRAIN-phase layers; use the MobileNetSSD_train.prototxt that gen-model writes"


@dataclass
class SsdTrainPlan:
    """What :func:`plan_training` found: the train net's inputs and the test net (if any)."""

    solver: Path
    train_net: Path
    train_lmdb: Path
    train_images: int
    num_classes: int
    test_net: Path | None
    test_every: int


def check_lmdb_labels(lmdb_path: Path, num_classes: int, what: str) -> int:
    """Records of ``lmdb_path`` (refused when unusable, or when a label is outside ``1 .. num_classes-1``)."""
    from .annotated_lmdb import read_annotated_lmdb
    from .model import ModelConfigError, lmdb_record_count

    try:
        records = lmdb_record_count(lmdb_path, what)
    except ModelConfigError as exc:
        raise TrainingError(str(exc)) from exc
    bad: dict[int, str] = {}
    for key, anno in read_annotated_lmdb(lmdb_path):
        for group in anno.annotation_group:
            if not 0 < group.group_label < num_classes:
                bad.setdefault(int(group.group_label), key)
    if bad:
        shown = ", ".join(f"{label} (first in record {key})" for label, key in sorted(bad.items())[:5])
        raise TrainingError(f"{what} {lmdb_path}: object labels {shown} are outside 1 .. {num_classes - 1}, the "
                            f"classes of a {num_classes}-class net; regenerate the nets with the right --classes "
                            "(gen-model) or the LMDB with the right label map")
    return records


def check_train_net(net_path: Path) -> tuple[Path, int]:
    """``(train LMDB, num_classes)`` of an SSD train net, every input checked (see the module docstring)."""
    from .labelmap import LabelMapError, load_labelmap

    try:
        net = read_net_prototxt(net_path)
    except CaffeModelError as exc:
        raise TrainingError(str(exc)) from exc
    layers = phase_layers(net, TRAIN_PHASE)
    data = only_layer(layers, "AnnotatedData", net_path, _TRAIN_NET_HINT, TrainingError)
    loss = only_layer(layers, "MultiBoxLoss", net_path, _TRAIN_NET_HINT, TrainingError)
    num_classes = int(loss.multibox_loss_param.num_classes)
    if num_classes < 2:
        raise TrainingError(f"{net_path}: layer '{loss.name}' has num_classes {num_classes}; it counts the "
                            "background too, so it must be at least 2")
    check_heads(net, net_path, TRAIN_PHASE)
    lmdb = path_in_prototxt(data.data_param.source, net_path)
    labelmap = data.annotated_data_param.label_map_file
    if labelmap:
        try:
            load_labelmap(path_in_prototxt(labelmap, net_path), num_classes)
        except LabelMapError as exc:
            raise TrainingError(f"{exc} (the label map of layer '{data.name}' in {net_path})") from exc
    return lmdb, num_classes


def check_heads(net: Any, path: Path, phase: int) -> None:
    """Refuse a net whose confidence/location heads do not match its prior boxes (Caffe's
    ``num_priors_ * num_classes_ == bottom[1]->channels()`` abort), naming the layers."""
    from .heads import HeadMismatchError, check_heads_match_priors

    try:
        check_heads_match_priors(net, path, phase)
    except HeadMismatchError as exc:
        raise TrainingError(str(exc)) from exc


def plan_training(solver_path: str | Path, test_every: int | None = None) -> SsdTrainPlan:
    """Read the solver and check everything it names before any Caffe object exists."""
    solver_path = Path(solver_path)
    param = read_solver(solver_path)
    net_path = train_net_path(solver_path, param)
    lmdb, num_classes = check_train_net(net_path)
    images = check_lmdb_labels(lmdb, num_classes, f"{net_path}: the train LMDB")
    test_net = _resolve_net_path(solver_path, param.test_net[0]) if len(param.test_net) else None
    if test_every is None:
        test_every = int(param.test_interval) or DEFAULT_TEST_EVERY
    return SsdTrainPlan(solver_path, net_path, lmdb, images, num_classes, test_net if test_every else None, test_every)


def make_tester(plan: SsdTrainPlan) -> Any:
    """The :class:`SsdTester` of the solver's test net (its LMDB must not be the train LMDB)."""
    from .evaluation import SsdTester, SsdTestError

    try:
        tester = SsdTester(plan.test_net)
    except SsdTestError as exc:
        raise TrainingError(f"the test net cannot be used for testing during training: {exc} "
                            "(or pass --test-every 0)") from exc
    if Path(tester.layout.lmdb).resolve() == Path(plan.train_lmdb).resolve():
        raise TrainingError(f"{plan.test_net}: the test net reads the train LMDB {plan.train_lmdb}; Caffe cannot "
                            "open one LMDB in two data layers (it waits forever). Test on another LMDB, or "
                            "pass --test-every 0")
    return tester


def train_ssd(solver: str | Path, out_dir: str | Path, *, weights: Sequence[Path] = (), resume: Path | None = None,
              max_iter: int | None = None, base_lr: float | None = None, seed: int | None = None,
              test_every: int | None = None, snapshot_every: int = 0, progress: bool = True) -> TrainResult:
    """Check, then run (or resume) the training a solver describes; see the module docstring.

    ``resume`` may be a ``.solverstate`` or an output folder (its newest snapshot).
    """
    plan = plan_training(solver, test_every)
    if resume is not None and Path(resume).is_dir():
        state = latest_snapshot(resume)
        if state is None:
            raise TrainingError(f"--resume {resume}: no snapshots/iter_*.solverstate in that folder")
        resume = state
    tester = make_tester(plan) if plan.test_net else None
    test_net: list[Any] = []

    def share_test_net(caffe_solver: Any) -> None:
        test_net.append(tester.make_net(share_with=caffe_solver.net))

    def validate(_net: Any, _iteration: int) -> dict[str, float]:
        result = tester.run(test_net[0])
        return {"map": result.caffe_map}

    config = TrainConfig(solver=Path(solver), out_dir=Path(out_dir), max_iter=max_iter, base_lr=base_lr,
                         init_weights=list(weights), resume=resume, seed=seed, snapshot_every=snapshot_every,
                         validate_every=plan.test_every if tester else 0,
                         validation_columns=("map",) if tester else (), progress=progress,
                         drop_solver_tests=True)
    return train(config, validate if tester else None, share_test_net if tester else None)
