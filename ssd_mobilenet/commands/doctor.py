"""``doctor``: the same installation check as ``mtcnn-caffe doctor``."""
from mtcnn_caffe.commands.doctor import register, run  # noqa: F401  (re-exported subcommand)
