"""Subcommands shared by ``mtcnn-caffe`` and ``ssd-mobilenet`` (``doctor``, ``merge-bn``)."""
