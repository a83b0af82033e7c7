"""``merge-bn``: the same BatchNorm folding as ``mtcnn-caffe merge-bn`` (MobileNet-SSD deploy nets)."""
from mtcnn_caffe.commands.merge_bn import register, run  # noqa: F401  (re-exported subcommand)
