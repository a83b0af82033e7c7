"""The multi-task face network (one MobileNet-SSD pass: face / partial face, box, five landmarks).

:mod:`.targets`: prior matching, target encoding and decoding (numpy); :mod:`.layers`: the Caffe layer
that turns a ground-truth blob into per-prior targets for the shared losses of
:mod:`caffe_common.loss_layers`.
"""
