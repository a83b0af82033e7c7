"""Train and validation nets and solvers of the three MTCNN stages, generated with Caffe's NetSpec from the
same bodies as the deploy nets (:mod:`.deploy`), so layer names match the official weights: those load for
fine-tuning, and a trained net's weights drop into the deploy net unchanged.

Per stage: the data layer (:class:`mtcnn_caffe.train.layers.MtcnnBatchLayer`), the body with fillers, and
the losses (blocked back-propagation, the shared :mod:`caffe_common.loss_layers`):

* ``loss_cls``: OHEM softmax (hardest ``ohem`` share of pos/neg) or, with ``ohem=1``, Caffe's own
  ``SoftmaxWithLoss { ignore_label: -1 }``; plus ``accuracy`` on pos/neg;
* ``loss_box``: Euclidean on pos and part samples;
* ``loss_landmark``: Euclidean on landmark samples. O-Net has the official ``conv6-3`` head; P- and R-Net
  get a training-only head (``conv4-3`` / ``conv5-3``, 10 outputs), as in the paper, which the deploy
  net leaves out.

``python -m mtcnn_caffe.nets`` writes the committed examples ``prototxt/mtcnn/det{1,2,3}_{train,val,solver}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from caffe_common.atomic import write_text_atomic

from ..train.batches import DEFAULT_MIX
from .deploy import STAGE_TITLES, conv_layer, fc_layer, caffe_factories, onet_body, pnet_body, rnet_body

#: Stage by input size, and its body, feature top (before the heads) and head names.
STAGE_OF_SIZE = {12: "det1", 24: "det2", 48: "det3"}


@dataclass(frozen=True)
class Heads:
    body: Any
    feature: str
    cls: str
    box: str
    landmark: str
    landmark_is_official: bool


HEADS = {
    "det1": Heads(pnet_body, "PReLU3", "conv4-1", "conv4-2", "conv4-3", False),
    "det2": Heads(rnet_body, "prelu4", "conv5-1", "conv5-2", "conv5-3", False),
    "det3": Heads(onet_body, "prelu5", "conv6-1", "conv6-2", "conv6-3", True),
}


@dataclass(frozen=True)
class StageRecipe:
    """Everything that shapes one stage's training: data mix, losses, solver. Defaults and why:

    * batch 384/256/128: the reproductions' sizes for P/R-Net; O-Net halved so an iteration stays
      under a second on two CPU cores;
    * task weights cls/box/landmark 1/0.5/0.5 (P, R) and 1/0.5/1 (O): the paper;
    * OHEM 0.7: the paper keeps the hardest 70% of the classification losses;
    * SGD, momentum 0.9, base lr 0.01, weight decay 5e-4, lr x0.1 at 60% and 85% of the run: the
      reproductions' lr 0.01-0.05 decayed a few times; 0.01 is the stable end with OHEM and xavier init;
    * mix neg:pos:part:landmark 3:1:1:2: the paper.
    """

    size: int
    batch_size: int
    loss_weights: tuple[float, float, float]
    max_iter: int
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    steps: tuple[float, ...] = (0.6, 0.85)
    gamma: float = 0.1
    ohem: float = 0.7
    mix: str = DEFAULT_MIX
    seed: int = 0
    tasks: str = "all"                 # or "cls": classification only (the seed's only-cls weights)
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def stage(self) -> str:
        return STAGE_OF_SIZE[self.size]

    @property
    def batch_mix(self) -> str:
        """The mix the data layer draws: classification-only training draws no part or landmark samples
        (they carry no class label)."""
        if self.tasks == "all":
            return self.mix
        neg, pos, _, _ = self.mix.split(":")
        return f"{neg}:{pos}:0:0"

    def with_options(self, **changes: Any) -> "StageRecipe":
        """A copy with the given fields replaced (``None`` values ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES = {
    12: StageRecipe(12, 384, (1.0, 0.5, 0.5), 10000),
    24: StageRecipe(24, 256, (1.0, 0.5, 0.5), 8000),
    48: StageRecipe(48, 128, (1.0, 0.5, 1.0), 6000),
}


def default_source(size: int) -> str:
    """The pack folder of the README's data-generation sequence."""
    return f"output/mtcnn_data/{size}/pack"


def _data_layer(L, recipe: StageRecipe, split: str):
    params = {"source": recipe.source or default_source(recipe.size), "batch_size": recipe.batch_size,
              "split": split}
    if split == "train":
        params.update({"mix": recipe.batch_mix, "seed": recipe.seed})
    return L.Python(ntop=5, python_param={"module": "mtcnn_caffe.train.layers", "layer": "MtcnnBatchLayer",
                                          "param_str": json.dumps(params)})


def _python_loss(L, bottoms, layer: str, params: dict, weight: float):
    return L.Python(*bottoms, loss_weight=weight, python_param={
        "module": "caffe_common.loss_layers", "layer": layer, "param_str": json.dumps(params)})


def train_net(recipe: StageRecipe, split: str = "train") -> Any:
    """The ``NetParameter`` of a stage's train (``split="train"``) or validation (``"val"``) net."""
    caffe, L, P = caffe_factories()
    heads = HEADS[recipe.stage]
    w_cls, w_box, w_landmark = recipe.loss_weights
    n = caffe.NetSpec()
    n.data, n.label, n.cls_label, n.roi, n.pts = _data_layer(L, recipe, split)
    heads.body(n, n.data, fillers=True)
    cls_only = recipe.tasks == "cls"
    if not heads.landmark_is_official and not cls_only:  # P-Net is fully convolutional: a 1x1 conv head
        feature = n[heads.feature]
        n[heads.landmark] = conv_layer(L, feature, 10, 1, True) if recipe.stage == "det1" else fc_layer(L, feature, 10, True)
    if recipe.ohem < 1:
        n.loss_cls = _python_loss(L, (n[heads.cls], n.cls_label), "OhemSoftmaxLoss", {"keep": recipe.ohem}, w_cls)
    else:
        n.loss_cls = L.SoftmaxWithLoss(n[heads.cls], n.cls_label, loss_weight=w_cls,
                                       loss_param={"ignore_label": -1, "normalization": P.Loss.VALID})
    n.accuracy = L.Accuracy(n[heads.cls], n.cls_label, accuracy_param={"ignore_label": -1})
    if not cls_only:
        n.loss_box = _python_loss(L, (n[heads.box], n.roi, n.label), "MaskedEuclideanLoss", {"labels": [1, -1]}, w_box)
        n.loss_landmark = _python_loss(L, (n[heads.landmark], n.pts, n.label), "MaskedEuclideanLoss",
                                       {"labels": [-2]}, w_landmark)
    else:
        n.silence = L.Silence(n.label, n.roi, n.pts, n[heads.box], ntop=0)
        if heads.landmark_is_official:
            n.silence_landmark = L.Silence(n[heads.landmark], ntop=0)
    proto = n.to_proto()
    proto.name = f"{STAGE_TITLES[recipe.stage]}_{split}"
    return proto


def solver_text(recipe: StageRecipe, net_path: str) -> str:
    """A solver prototxt for ``recipe`` training ``net_path``."""
    lines = [f'net: "{net_path}"', f"base_lr: {recipe.base_lr:g}", 'lr_policy: "multistep"', f"gamma: {recipe.gamma:g}"]
    lines += [f"stepvalue: {max(1, int(recipe.max_iter * s))}" for s in recipe.steps]
    lines += [f"momentum: {recipe.momentum:g}", f"weight_decay: {recipe.weight_decay:g}", f"max_iter: {recipe.max_iter}",
              f"snapshot: {max(1, recipe.max_iter // 10)}", f'snapshot_prefix: "{STAGE_OF_SIZE[recipe.size]}"',
              f"random_seed: {recipe.seed}", "solver_mode: CPU", "display: 100"]
    return "\n".join(lines) + "\n"


HEADER = ("# MTCNN {title} {what} ({size}x{size}); see mtcnn_caffe/nets/train.py.\n"
          "# Generated by `python -m mtcnn_caffe.nets`; do not edit by hand. `mtcnn-caffe train` writes its own copy\n"
          "# with your pack path and options into the output folder.\n")


def write_training_files(directory: str | Path, recipe: StageRecipe, solver_net: str | None = None) -> dict[str, Path]:
    """``det<k>_train.prototxt``, ``det<k>_val.prototxt`` and ``det<k>_solver.prototxt`` into ``directory``;
    the solver names the train net as ``solver_net`` (default: its path as written)."""
    directory = Path(directory)
    stage, title = recipe.stage, STAGE_TITLES[recipe.stage]
    files = {}
    for split in ("train", "val"):
        header = HEADER.format(title=title, what=f"{split} net", size=recipe.size)
        files[split] = write_text_atomic(directory / f"{stage}_{split}.prototxt", header + str(train_net(recipe, split)))
    header = HEADER.format(title=title, what="solver", size=recipe.size)
    files["solver"] = write_text_atomic(directory / f"{stage}_solver.prototxt",
                                        header + solver_text(recipe, solver_net or str(files["train"])))
    return files


def committed_training_files(directory: str | Path) -> list[Path]:
    """The example training files of all three stages (default recipes, README pack paths); the solvers
    name their nets relative to the repository root, where users run them."""
    paths: list[Path] = []
    for recipe in RECIPES.values():
        paths += write_training_files(directory, recipe, f"prototxt/mtcnn/{recipe.stage}_train.prototxt").values()
    return paths
