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

``FaceTeacherLayer`` (distillation): a trained face model folder (the teacher) run on the train net's own
``data`` blob; its top ``teacher_conf (N*P, 3)`` holds the teacher's class probabilities per prior, in the
student's row order, for ``caffe_common.loss_layers.SoftTargetLoss``. Bottoms: ``data`` and the student's
``mbox_priorbox``: the teacher's priors must equal the student's (the same prior layout and input side),
else rows would pair different boxes; checked on every batch. ``param_str``: ``{"model_dir": DIR,
"backend": "opencv"}`` (OpenCV DNN, the faster inference backend, or ``"caffe"``). No gradient flows back.
"""
from __future__ import annotations

import numpy as np

from caffe_common.env import import_caffe
from caffe_common.loss_layers import layer_params

from .targets import (
    NUM_CLASSES,
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


TEACHER_BACKENDS = ("opencv", "caffe")


class FaceTeacherLayer(caffe.Layer):
    """A frozen face model's per-prior class probabilities on the batch (see the module doc)."""

    def setup(self, bottom, top):
        from .detect import FaceDetector

        if len(bottom) != 2 or len(top) != 1:
            raise ValueError("FaceTeacherLayer takes data and mbox_priorbox bottoms and gives one top (teacher_conf)")
        params = layer_params("FaceTeacherLayer", self.param_str)
        unknown = set(params) - {"model_dir", "backend"}
        if unknown or "model_dir" not in params:
            raise ValueError(f"FaceTeacherLayer: param_str needs 'model_dir' (and optionally 'backend'), got "
                             f"{self.param_str!r}")
        backend = params.get("backend", TEACHER_BACKENDS[0])
        if backend not in TEACHER_BACKENDS:
            raise ValueError(f"FaceTeacherLayer: backend must be one of {TEACHER_BACKENDS}, got {backend!r}")
        self.teacher = FaceDetector(params["model_dir"], backend=backend)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].data.shape[0] * len(priors_from_blob(bottom[1].data)[0]), NUM_CLASSES)

    def forward(self, bottom, top):
        out = self.teacher.forward_blob(bottom[0].data)
        student = bottom[1].data
        if out["priors"].shape != student.shape or not np.allclose(out["priors"], student, atol=1e-5):
            raise ValueError(f"FaceTeacherLayer: the teacher {self.teacher.info.directory} has other priors "
                             f"({out['priors'].shape[2] // 4}) than the student ({student.shape[2] // 4}) at input "
                             f"{bottom[0].data.shape[2:]}: distil only between nets of the same prior layout")
        top[0].data[...] = out["conf"].reshape(top[0].data.shape)

    def backward(self, top, propagate_down, bottom):
        pass
