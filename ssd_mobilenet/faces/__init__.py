"""The multi-task face network (one MobileNet-SSD pass: face / partial face, box, five landmarks).

In pipeline order: :mod:`.dataset` (the face index from WIDER FACE and a 5-point list), :mod:`.augment` and
:mod:`.data_layer` (training batches), :mod:`.preprocess` (the one input convention), :mod:`.targets`
(prior matching, target encoding and decoding, numpy) and :mod:`.layers` (the Caffe layer that turns a
ground-truth blob into per-prior targets for the shared losses of :mod:`caffe_common.loss_layers`),
:mod:`.model` (train / deploy nets, solver, ``face_model.json``), :mod:`.training` (``train-faces``) and
:mod:`.detect` (the detector behind ``detect-faces``).
"""
