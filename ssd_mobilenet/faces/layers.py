"""Caffe Python layer of the face network's training: per-prior targets for the shared losses.

``FacePriorTargetLayer`` bottoms: the priors (``mbox_priorbox``, PriorBox's ``(1, 2, P * 4)``: boxes and
variances), the ground-truth blob (:data:`~ssd_mobilenet.faces.targets.GT_COLUMNS`) and any blob whose first
axis is the batch size ``N`` (the data blob: images without faces leave no row in the ground truth).
Tops, ``N * P`` rows image after image (the row order of the permuted and flattened SSD heads), as
:data:`~ssd_mobilenet.faces.targets.TARGET_NAMES`: ``cls_label (N*P,)``, ``box_target (N*P, 4)``,
``box_label (N*P,)``, ``lmk_target (N*P, 10)``, ``lmk_label (N*P,)``. No gradient flows back.

The losses that read them (module ``caffe_common.loss_layers``): ``OhemSoftmaxLoss``
``{"neg_pos_ratio": 3}`` on ``(mbox_conf, cls_label)``, ``MaskedSmoothL1Loss`` ``{"labels": [1]}`` on
``(mbox_loc, box_target, box_label)`` and on ``(mbox_lmk, lmk_target, lmk_label)``.
``param_str`` (JSON, optional): ``{"overlap": 0.5}``.
"""
from __future__ import annotations

from caffe_common.env import import_caffe
from caffe_common.loss_layers import layer_params

from .targets import (
    NUM_LANDMARKS,
    OVERLAP_THRESHOLD,
    TARGET_NAMES,
    batch_targets,
    priors_from_blob,
    unpack_ground_truth,
)

caffe = import_caffe()

_WIDTHS = {"cls_label": None, "box_target": 4, "box_label": None, "lmk_target": 2 * NUM_LANDMARKS, "lmk_label": None}


class FacePriorTargetLayer(caffe.Layer):
    """Ground truth -> matched per-prior targets (:func:`ssd_mobilenet.faces.targets.batch_targets`)."""

    def setup(self, bottom, top):
        if len(bottom) != 3:
            raise ValueError("FacePriorTargetLayer takes priors, ground-truth and batch (e.g. data) bottoms")
        if len(top) != len(TARGET_NAMES):
            raise ValueError(f"FacePriorTargetLayer has {len(TARGET_NAMES)} tops ({', '.join(TARGET_NAMES)}), "
                             f"got {len(top)}")
        params = layer_params("FacePriorTargetLayer", self.param_str)
        unknown = set(params) - {"overlap"}
        if unknown:
            raise ValueError(f"FacePriorTargetLayer: unknown param_str keys {sorted(unknown)}")
        self.overlap = float(params.get("overlap", OVERLAP_THRESHOLD))
        if not 0 < self.overlap <= 1:
            raise ValueError(f"FacePriorTargetLayer: overlap must be in (0, 1], got {self.overlap}")

    def reshape(self, bottom, top):
        rows = bottom[2].data.shape[0] * len(priors_from_blob(bottom[0].data)[0])
        for i, name in enumerate(TARGET_NAMES):   # RawBlobVec: indexed, not iterable
            width = _WIDTHS[name]
            top[i].reshape(*((rows,) if width is None else (rows, width)))

    def forward(self, bottom, top):
        truths = unpack_ground_truth(bottom[1].data, bottom[2].data.shape[0])
        priors, variances = priors_from_blob(bottom[0].data)   # read here: PriorBox fills its top in forward
        targets = batch_targets(priors, truths, variances, self.overlap)
        for i, name in enumerate(TARGET_NAMES):
            top[i].data[...] = targets[name]

    def backward(self, top, propagate_down, bottom):
        pass
