"""Subcommands of ``mtcnn-caffe``: every public module here defines ``register(subparsers)``."""
