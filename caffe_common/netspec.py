"""Reusable Caffe NetSpec builders: networks are generated from these, never by text substitution.

Each builder adds layers to a ``caffe.NetSpec`` ``n`` and returns the top it produced. Layer names
follow the MobileNet-SSD convention, which MTCNN's and the face models' nets share:

* ``name`` the convolution, ``name/bn`` BatchNorm, ``name/scale`` Scale, ``name/relu`` the activation
  (in place), ``name/dw`` for the depthwise half of a separable block;
* a multibox head on feature map ``f``: ``f_mbox_loc`` / ``f_mbox_conf`` convolutions, their ``_perm``
  (Permute 0, 2, 3, 1) and ``_flat`` (Flatten axis 1), and ``f_mbox_priorbox``.

Learning-rate multipliers are passed as :class:`Mults` so that one builder serves the
backbone (the seed's 0.1/0.1 on weights) and freshly initialised heads (1/1 weights, 2/0 biases).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Mults:
    """``lr_mult``/``decay_mult`` of a layer's weights and (when it has one) its bias."""

    weight_lr: float = 1.0
    weight_decay: float = 1.0
    bias_lr: float = 2.0
    bias_decay: float = 0.0

    def params(self, bias: bool) -> list[dict[str, float]]:
        """The ``param { }`` entries of a learnable layer."""
        out = [{"lr_mult": self.weight_lr, "decay_mult": self.weight_decay}]
        if bias:
            out.append({"lr_mult": self.bias_lr, "decay_mult": self.bias_decay})
        return out


#: Multipliers of a pretrained backbone (MobileNet-SSD's conv layers and the heads it fine-tunes).
BACKBONE = Mults(0.1, 0.1, 0.2, 0.0)
#: Multipliers of new layers.
FRESH = Mults(1.0, 1.0, 2.0, 0.0)
#: BatchNorm statistics are not learned by the solver.
FROZEN_BN = [{"lr_mult": 0, "decay_mult": 0}] * 3
ACTIVATIONS = ("relu", "relu6", "prelu", None)


def caffe_layers() -> tuple[Any, Any]:
    """``(L, P)``: Caffe's NetSpec layer and parameter factories."""
    from .env import import_caffe

    caffe = import_caffe()
    return caffe.layers, caffe.params


def activation(n: Any, name: str, bottom: Any, kind: str | None, mults: Mults = FRESH) -> Any:
    """An in-place activation ``name/relu`` (ReLU, ReLU6) or ``name/prelu`` (PReLU, learnable slopes, no decay)."""
    L, _ = caffe_layers()
    if kind is None:
        return bottom
    if kind == "relu":
        layer = L.ReLU(bottom, in_place=True)
        suffix = "relu"
    elif kind == "relu6":
        layer = L.ReLU6(bottom, in_place=True)
        suffix = "relu"
    elif kind == "prelu":
        layer = L.PReLU(bottom, in_place=True, param=[{"lr_mult": mults.weight_lr, "decay_mult": 0}])
        suffix = "prelu"
    else:
        raise ValueError(f"unknown activation {kind!r} (choose from {ACTIVATIONS})")
    n[f"{name}/{suffix}"] = layer
    return layer


def conv(n: Any, name: str, bottom: Any, num_output: int, kernel: int, stride: int = 1, pad: int = 0,
         group: int = 1, bias: bool = True, mults: Mults = FRESH, weight_filler: dict | None = None,
         bias_filler: dict | None = None, engine_caffe: bool = False) -> Any:
    """A Convolution ``name`` (the top has the same name)."""
    L, P = caffe_layers()
    conv_param: dict[str, Any] = {"num_output": num_output, "kernel_size": kernel}
    if not bias:
        conv_param["bias_term"] = False
    if pad:
        conv_param["pad"] = pad
    if stride != 1:
        conv_param["stride"] = stride
    if group != 1:
        conv_param["group"] = group
    if engine_caffe:
        conv_param["engine"] = P.Convolution.CAFFE
    conv_param["weight_filler"] = weight_filler or {"type": "msra"}
    if bias and bias_filler is not None:
        conv_param["bias_filler"] = bias_filler
    n[name] = L.Convolution(bottom, param=mults.params(bias), convolution_param=conv_param)
    return n[name]


def batch_norm_scale(n: Any, name: str, bottom: Any, mults: Mults = BACKBONE) -> Any:
    """In-place ``name/bn`` (BatchNorm, statistics frozen for the solver) + ``name/scale`` (Scale with bias)."""
    L, _ = caffe_layers()
    n[f"{name}/bn"] = L.BatchNorm(bottom, in_place=True, param=FROZEN_BN)
    scale_param = {"filler": {"value": 1}, "bias_term": True, "bias_filler": {"value": 0}}
    n[f"{name}/scale"] = L.Scale(n[f"{name}/bn"], in_place=True, scale_param=scale_param,
                                 param=[{"lr_mult": mults.weight_lr, "decay_mult": 0.0},
                                        {"lr_mult": mults.bias_lr, "decay_mult": 0.0}])
    return n[f"{name}/scale"]


def conv_bn_act(n: Any, name: str, bottom: Any, num_output: int, kernel: int, stride: int = 1, pad: int = 0,
                group: int = 1, act: str | None = "relu", bn: bool = True, mults: Mults = BACKBONE,
                depthwise_type: str | None = None) -> Any:
    """Convolution + (BatchNorm + Scale) + activation, MobileNet-SSD style; returns the (in-place) top.

    With ``bn`` the convolution has no bias (BatchNorm's shift replaces it), as in the reference nets.
    ``depthwise_type`` replaces ``Convolution`` by a native depthwise layer type when the Caffe in use
    has one (``group`` then equals the channel count).
    """
    engine = group > 1
    top = conv(n, name, bottom, num_output, kernel, stride, pad, group, bias=not bn, mults=mults,
               bias_filler={"type": "constant", "value": 0.0} if not bn else None, engine_caffe=engine)
    if depthwise_type and group > 1:
        n[name].fn.type_name = depthwise_type  # same parameters (the native layer ignores engine)
    if bn:
        top = batch_norm_scale(n, name, top, mults)
    return activation(n, name, top, act, mults)


def depthwise_separable(n: Any, name: str, bottom: Any, in_channels: int, out_channels: int, stride: int = 1,
                        act: str | None = "relu", bn: bool = True, mults: Mults = BACKBONE,
                        depthwise_type: str | None = None) -> Any:
    """MobileNet's block: 3x3 depthwise ``name/dw`` (group = channels) then 1x1 pointwise ``name``."""
    dw = conv_bn_act(n, f"{name}/dw", bottom, in_channels, 3, stride, 1, group=in_channels, act=act, bn=bn,
                     mults=mults, depthwise_type=depthwise_type)
    return conv_bn_act(n, name, dw, out_channels, 1, act=act, bn=bn, mults=mults)


@dataclass(frozen=True)
class PriorSpec:
    """The prior boxes of one feature map (``PriorBoxParameter``).

    ``min_size``: one side, or several (Caffe's repeated ``min_size``: per cell, each size with every
    aspect ratio, in the order given; a ``max_size`` then goes with a single ``min_size`` only).
    An empty ``aspect_ratios`` gives square priors only.
    """

    min_size: float | Sequence[float]
    max_size: float | None = None
    aspect_ratios: Sequence[float] = (2.0,)
    flip: bool = True
    clip: bool = False
    variance: Sequence[float] = (0.1, 0.1, 0.2, 0.2)
    offset: float = 0.5
    step: float | None = None

    @property
    def min_sizes(self) -> tuple[float, ...]:
        """The ``min_size`` values as a tuple."""
        sizes = self.min_size
        return tuple(float(s) for s in sizes) if isinstance(sizes, (list, tuple)) else (float(sizes),)

    @property
    def priors_per_cell(self) -> int:
        """Priors per feature-map cell, as ``PriorBoxLayer`` counts them (duplicate ratios ignored)."""
        ratios = [1.0]
        for r in self.aspect_ratios:
            for value in (r, 1.0 / r) if self.flip else (r,):
                if all(abs(value - seen) > 1e-6 for seen in ratios):
                    ratios.append(value)
        return (len(ratios) + (1 if self.max_size else 0)) * len(self.min_sizes)

    def param(self) -> dict[str, Any]:
        sizes = self.min_sizes
        if self.max_size and len(sizes) != 1:
            raise ValueError(f"a max_size ({self.max_size}) needs exactly one min_size, got {sizes}")
        out: dict[str, Any] = {"min_size": sizes[0] if len(sizes) == 1 else list(sizes)}
        if self.max_size:
            out["max_size"] = float(self.max_size)
        if self.aspect_ratios:  # NetSpec cannot write an empty repeated field
            out["aspect_ratio"] = [float(r) for r in self.aspect_ratios]
        out.update({"flip": self.flip, "clip": self.clip, "variance": [float(v) for v in self.variance],
                    "offset": float(self.offset)})
        if self.step:
            out["step"] = float(self.step)
        return out


def multibox_head(n: Any, source: str, data: Any, num_classes: int, prior: PriorSpec,
                  loc_mults: Mults = BACKBONE, conf_mults: Mults = FRESH, conf_name: str | None = None,
                  extra_outputs: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """SSD prediction layers on feature map ``source``: 1x1 loc and conf convolutions, each permuted to
    NHWC and flattened, and the PriorBox layer. Returns the flat tops by kind (``loc``, ``conf``,
    ``priorbox`` and one per ``extra_outputs`` entry ``(kind, values_per_prior)``, e.g. landmarks).

    ``conf_name`` renames the conf layers (the seed's ``*_new`` convention: a fine-tuned model with another
    class count must not load the old conf weights).
    """
    L, _ = caffe_layers()
    per_cell = prior.priors_per_cell
    outputs: dict[str, Any] = {}
    kinds = [("loc", 4, loc_mults, f"{source}_mbox_loc"),
             ("conf", num_classes, conf_mults, conf_name or f"{source}_mbox_conf")]
    kinds += [(kind, size, conf_mults, f"{source}_mbox_{kind}") for kind, size in extra_outputs]
    for kind, size, mults, name in kinds:
        top = conv(n, name, n[source], per_cell * size, 1, mults=mults,
                   bias_filler={"type": "constant", "value": 0.0})
        n[f"{name}_perm"] = L.Permute(top, permute_param={"order": [0, 2, 3, 1]})
        n[f"{name}_flat"] = L.Flatten(n[f"{name}_perm"], flatten_param={"axis": 1})
        outputs[kind] = n[f"{name}_flat"]
    n[f"{source}_mbox_priorbox"] = L.PriorBox(n[source], data, prior_box_param=prior.param())
    outputs["priorbox"] = n[f"{source}_mbox_priorbox"]
    return outputs


def concat_heads(n: Any, heads: Sequence[dict[str, Any]], kinds: Sequence[str] = ("loc", "conf", "priorbox")) -> None:
    """``mbox_loc``, ``mbox_conf``, ``mbox_priorbox`` (and any extra kinds): the heads concatenated
    (axis 1; priors on axis 2)."""
    L, _ = caffe_layers()
    for kind in kinds:
        axis = 2 if kind == "priorbox" else 1
        n[f"mbox_{kind}"] = L.Concat(*[head[kind] for head in heads], concat_param={"axis": axis})


def inverted_residual(n: Any, name: str, bottom: Any, in_channels: int, out_channels: int, stride: int = 1,
                      expand_ratio: float = 6, act: str | None = "relu6", mults: Mults = BACKBONE,
                      depthwise_type: str | None = None, bn: bool = True) -> Any:
    """MobileNetV2's inverted-residual block; returns its output top.

    ``name/expand``: 1x1 conv + BN + ``act`` to ``round(in_channels * expand_ratio)`` channels (omitted when
    ``expand_ratio`` is 1); ``name/dw``: 3x3 depthwise conv (``stride``, group = channels) + BN + ``act``;
    ``name/project``: 1x1 linear conv + BN (no activation); ``name/sum``: Eltwise SUM with ``bottom`` when
    ``stride`` is 1 and ``in_channels == out_channels`` (the shortcut). ``bn=False``: no BatchNorm + Scale,
    the convolutions have biases (a net whose BatchNorm is folded, as by merge_bn).
    """
    L, P = caffe_layers()
    hidden = round(in_channels * expand_ratio)
    top = bottom
    if expand_ratio != 1:
        top = conv_bn_act(n, f"{name}/expand", top, hidden, 1, act=act, bn=bn, mults=mults)
    top = conv_bn_act(n, f"{name}/dw", top, hidden, 3, stride, 1, group=hidden, act=act, bn=bn, mults=mults,
                      depthwise_type=depthwise_type)
    top = conv_bn_act(n, f"{name}/project", top, out_channels, 1, act=None, bn=bn, mults=mults)
    if stride == 1 and in_channels == out_channels:
        n[f"{name}/sum"] = L.Eltwise(bottom, top, eltwise_param={"operation": P.Eltwise.SUM})
        top = n[f"{name}/sum"]
    return top
