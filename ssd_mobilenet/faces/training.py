"""``ssd-mobilenet train-faces``: from WIDER FACE + a 5-point landmark list to a face model folder, with the
shared training loop (:func:`caffe_common.solver.train`: progress, ``log.csv``, atomic snapshots, resume,
NaN stop, loss plot).

Steps, each resumable: (1) the face index (:func:`ssd_mobilenet.faces.dataset.build_face_index`) into
``OUT/data`` (kept on ``--resume``, so the batches continue where they stopped); (2) the nets and the solver
(:func:`ssd_mobilenet.faces.model.write_nets`) into ``OUT``; (3) with ``init="imagenet"`` the ImageNet
MobileNetV2 (the pinned torchvision weights, :data:`~ssd_mobilenet.mobilenet_v2.IMAGENET_ASSET`) converted
once into ``OUT/init`` and copied into the train net by layer name (the heads and extra blocks start from
their fillers); with ``init`` a face model folder of the same layout, its weights (fine-tuning a trained
model, e.g. with a teacher); (4) training (with ``teacher``, a face model folder of the same priors, the
distillation loss of :mod:`~ssd_mobilenet.faces.model` too); (5) the export: ``OUT/face.caffemodel`` (the
deploy net's layers of the final weights, BatchNorm kept; ``caffe_common.merge_bn`` can fold it) and, last,
``OUT/face_model.json``, so a folder holding that file is a complete model for ``ssd-mobilenet detect-faces
--model-dir OUT``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from caffe_common.atomic import atomic_path
from caffe_common.depthwise import resolve_depthwise
from caffe_common.solver import (
    SNAPSHOT_DIR,
    TrainConfig,
    TrainingError,
    latest_snapshot,
    prepare_out_dir,
    train,
    weight_fit_problems,
)

from .model import (
    DEFAULT_ARCH,
    DEPLOY_NET,
    SOLVER,
    WEIGHTS,
    FaceModelConfig,
    FaceModelError,
    SolverSettings,
    write_model_description,
    write_nets,
)

#: ``init`` values other than a face model folder.
INIT_CHOICES = ("imagenet", "none")
#: Iterations of the default run at 320 x 320, batch 16, from ImageNet weights: the best run so far, 74 minutes
#: on the 2-core machine (2 BLAS threads, 6.6 samples/s; bench/RESULTS.md).
DEFAULT_ITERS = 1800
DATA_DIR, INIT_DIR = "data", "init"
IMAGENET_WEIGHTS = "mobilenet_v2_imagenet.caffemodel"
FOLDED_IMAGENET_WEIGHTS = "mobilenet_v2_imagenet_nobn.caffemodel"
AFFINE_IMAGENET_WEIGHTS = "mobilenet_v2_imagenet_scale.caffemodel"


@dataclass
class FaceTrainResult:
    """What :func:`train_faces` produced."""

    model_dir: Path
    weights: Path
    iterations: int
    seconds: float
    log: Path | None
    plot: Path | None
    last_row: dict[str, float]
    train_images: int


def _data_index(out: Path, resume: bool, wider_anno: str | Path | None, wider_images: str | Path | None,
                landmarks: str | Path | None, landmark_images: str | Path | None,
                hold_out: Sequence[str], size: int,
                on_index: Callable[[list[str]], None] | None = None) -> tuple[Path, int]:
    """``(train index, images)``: built into ``out/data`` (the size floor of a ``size`` input; ``on_index``
    gets :func:`~.dataset.index_report`'s lines), or the one there when resuming."""
    from .dataset import SUMMARY, TRAIN_INDEX, build_face_index, index_report, min_face_fraction, read_face_index

    index = out / DATA_DIR / TRAIN_INDEX
    if not (resume and index.is_file()):
        if wider_anno is None and landmarks is None:
            raise TrainingError(f"no face index in {out / DATA_DIR} to resume with: give the WIDER annotations, "
                                "the landmark list or both")
        summary = build_face_index(wider_anno, wider_images, landmarks, landmark_images, out / DATA_DIR,
                                   hold_out=hold_out, min_face=min_face_fraction(size))
        if on_index:
            on_index(index_report(summary, out / DATA_DIR / SUMMARY))
        if not summary["train_images"]:
            raise TrainingError(f"no training image with a usable face in the inputs (see {out / DATA_DIR})")
    return index, len(read_face_index(index))


def imagenet_init(out: Path, backbone_bn: str) -> Path:
    """The ImageNet MobileNetV2 caffemodel in ``out/init`` for a train net whose backbone BatchNorm is
    ``backbone_bn`` (:data:`~.model.BACKBONE_BN`): converted from the pinned asset on first use ("frozen",
    "batch"), with each BatchNorm joined into its Scale ("affine",
    :func:`caffe_common.merge_bn.batch_norm_into_scale`) or folded into its convolution ("folded",
    :func:`caffe_common.merge_bn.merge_bn`); both are written only when the new net gives the same outputs."""
    from caffe_common.assets import asset_path
    from caffe_common.merge_bn import batch_norm_into_scale, merge_bn

    from ..mobilenet_v2 import IMAGENET_ASSET, convert_imagenet_weights

    weights = out / INIT_DIR / IMAGENET_WEIGHTS
    if not weights.is_file():
        weights.parent.mkdir(parents=True, exist_ok=True)
        convert_imagenet_weights(asset_path(*IMAGENET_ASSET), weights.with_suffix(".prototxt"), weights)
    transforms = {"folded": (FOLDED_IMAGENET_WEIGHTS, merge_bn),
                  "affine": (AFFINE_IMAGENET_WEIGHTS, batch_norm_into_scale)}
    if backbone_bn not in transforms:
        return weights
    name, transform = transforms[backbone_bn]
    target = out / INIT_DIR / name
    if not target.is_file():
        result = transform(weights.with_suffix(".prototxt"), weights, target.with_suffix(".prototxt"), target)
        if not result.written:
            raise TrainingError(f"{backbone_bn} BatchNorm of {weights} changed its outputs; nothing written")
    return target


def _face_model_json(model_dir: str | Path, role: str) -> tuple[Any, dict]:
    """``(read_model_info's FaceModelInfo, the face_model.json contents)`` of a face model folder given as
    ``role`` (``--init``, ``--teacher``), checked; a :class:`FaceModelError` naming the role otherwise."""
    import json

    from .detect import FaceModelFilesError, read_model_info
    from .model import MODEL_JSON

    try:
        info = read_model_info(model_dir)
        return info, json.loads((Path(model_dir) / MODEL_JSON).read_text(encoding="utf-8"))
    except FaceModelFilesError as exc:
        raise FaceModelError(f"{role} {model_dir}: {exc}") from exc


def face_model_init(model_dir: str | Path, arch: str, backbone_bn: str) -> Path:
    """The weights of the face model folder ``model_dir`` for fine-tuning a net of layout ``arch`` whose
    backbone BatchNorm is ``backbone_bn``; a :class:`FaceModelError` when the folder is not a face model of
    that layout, or its BatchNorm does not fit (a folded model, or one with BatchNorm layers where the
    net's Scale layers alone hold them: copied by name, the weights would mean something else)."""
    from caffe_common.model_files import CaffeModelError, read_caffemodel

    from .model import in_backbone

    info, description = _face_model_json(model_dir, "--init")
    recorded = description.get("arch")
    if recorded != arch:
        raise FaceModelError(f"--init {model_dir}: a face model of layout {recorded!r}, this run trains {arch!r} "
                             "(give --arch the same layout)")
    weights = info.weights
    try:
        layers = read_caffemodel(weights).layer
    except CaffeModelError as exc:
        raise FaceModelError(f"--init {model_dir}: {exc}") from exc
    kinds = {layer.type for layer in layers if in_backbone(layer.name) and len(layer.blobs)}
    wanted = {"affine": {"Scale"}, "frozen": {"BatchNorm", "Scale"}, "folded": set()}.get(backbone_bn, set())
    if kinds & {"BatchNorm", "Scale"} != wanted:
        raise FaceModelError(f"--init {model_dir}: its backbone normalisation layers are "
                             f"{sorted(kinds & {'BatchNorm', 'Scale'})}, a {backbone_bn} backbone has "
                             f"{sorted(wanted)} (a folded model cannot be fine-tuned; give the folder train-faces "
                             "wrote)")
    return weights


def _prior_layout(description: dict) -> list:
    priors = description.get("priors", {})
    return [[(m.get("stride"), m.get("min_sizes")) for m in priors.get("maps", [])], priors.get("variance")]


def check_teacher(model_dir: str | Path, size: int, arch: str) -> str:
    """The absolute path of a teacher face model folder whose priors equal those of a net of layout ``arch``
    (strides, prior sides, variances), else a :class:`FaceModelError` saying what differs."""
    from .model import model_description

    theirs = _prior_layout(_face_model_json(model_dir, "--teacher")[1])
    ours = _prior_layout(model_description(size, arch=arch))
    if theirs != ours:
        raise FaceModelError(f"--teacher {model_dir}: its priors (stride, sides) {theirs[0]} / variance {theirs[1]} "
                             f"differ from this net's {ours[0]} / {ours[1]}: distil only between nets of the same "
                             "priors")
    return str(Path(model_dir).resolve())


def export_weights(deploy: Path, trained: Path, target: Path) -> Path:
    """``target``: the deploy net with every learned layer copied from ``trained`` (checked first), saved
    atomically."""
    from caffe_common.env import import_caffe

    caffe = import_caffe()
    net = caffe.Net(str(deploy), caffe.TEST)
    problems = weight_fit_problems(net, trained, require_all=True)
    if problems:
        raise TrainingError(f"{trained} does not fit the deploy net {deploy}: " + "; ".join(problems[:5]))
    net.copy_from(str(trained))
    with atomic_path(target, suffix=".caffemodel") as tmp:
        net.save(str(tmp))
    return target


def train_faces(out_dir: str | Path, *, wider_anno: str | Path | None = None, wider_images: str | Path | None = None,
                landmarks: str | Path | None = None, landmark_images: str | Path | None = None,
                size: int | None = None, batch: int = 16, iters: int = DEFAULT_ITERS, init: str = "imagenet",
                wider_repeat: int | None = None, backbone_bn: str | None = None, arch: str = DEFAULT_ARCH,
                teacher: str | Path | None = None, distill_weight: float | None = None, resume: bool = False,
                seed: int = 0, base_lr: float | None = None,
                hold_out: Sequence[str] | None = None, progress: bool = True,
                solver: SolverSettings = SolverSettings(),
                on_index: Callable[[list[str]], None] | None = None) -> FaceTrainResult:
    """Train the face network into ``out_dir`` (module docstring). ``resume``: continue from the newest
    snapshot in ``out_dir`` (the index there is reused); without it a folder with snapshots is refused.
    ``init``: "imagenet", "none" (from the fillers) or a face model folder of layout ``arch`` (fine-tuning it).
    ``teacher``: a face model folder of the same priors to distil from (:func:`check_teacher`), its loss
    weighted ``distill_weight`` (default :attr:`~.model.LossWeights.distill`).
    ``solver``: the SGD settings (``base_lr`` overrides its rate). ``on_index`` receives the lines saying what
    a newly built index kept and skipped (:func:`~.dataset.index_report`).
    Raises :class:`~caffe_common.solver.TrainingError` (and its subclasses for interrupts and divergence),
    :class:`FaceModelError` or ValueError for unusable inputs."""
    from .dataset import DEFAULT_HOLD_OUT

    if iters < 1:
        raise FaceModelError(f"--iters {iters}: must be at least 1")
    pretrained = init != "none"
    config = FaceModelConfig(arch=arch, batch_size=batch, seed=seed, depthwise_type=resolve_depthwise("auto"))
    if not pretrained:  # from the fillers, every layer learns at the full rate, BatchNorm from the batch
        config = replace(config, backbone_bn="batch", frozen_blocks=0, backbone_lr=1.0)
    if size is not None:
        config = replace(config, size=size)
    if wider_repeat is not None:
        config = replace(config, wider_repeat=wider_repeat)
    if backbone_bn is not None and pretrained:
        config = replace(config, backbone_bn=backbone_bn)
    init_model = None if init in INIT_CHOICES else face_model_init(init, arch, config.backbone_bn)
    if teacher is not None:
        config = replace(config, teacher=check_teacher(teacher, config.size, arch))
        if distill_weight is not None:
            config = replace(config, loss_weights=replace(config.loss_weights, distill=distill_weight))
    elif distill_weight is not None:
        raise FaceModelError("--distill-weight goes with --teacher")
    config.check()
    out = prepare_out_dir(Path(out_dir)).resolve()
    state = latest_snapshot(out)
    if state is not None and not resume:
        raise TrainingError(f"--out {out_dir} holds the snapshots of an earlier run ({out / SNAPSHOT_DIR}); pass "
                            "--resume to continue it, or choose a new folder")
    if resume and state is None:
        resume = bool((out / DATA_DIR).is_dir())  # nothing trained yet: start, reusing the index if it is there
    index, images = _data_index(out, resume, wider_anno, wider_images, landmarks, landmark_images,
                                DEFAULT_HOLD_OUT if hold_out is None else hold_out, config.size, on_index)
    config = replace(config, index=str(index))
    if base_lr is not None:
        solver = replace(solver, base_lr=base_lr)
    files = write_nets(config, out, iters, solver).files
    finished = state is not None and int(state.stem.split("_")[1]) >= iters
    result = None
    if not finished:
        init_weights = ([] if not pretrained or state is not None
                        else [init_model] if init_model is not None else [imagenet_init(out, config.backbone_bn)])
        result = train(TrainConfig(solver=files[SOLVER], out_dir=out, init_weights=init_weights, resume=state,
                                   seed=seed, log_every=10 if iters > 200 else 1, progress=progress))
        trained, iterations, seconds = result.weights, result.iterations, result.seconds
    else:
        trained, iterations, seconds = state.with_suffix(".caffemodel"), int(state.stem.split("_")[1]), 0.0
    weights = export_weights(out / DEPLOY_NET, trained, out / WEIGHTS)
    write_model_description(out, config.size, arch=config.arch)
    return FaceTrainResult(out, weights, iterations, seconds, result.log if result else None,
                           result.plot if result else None, dict(result.last_row) if result else {}, images)
