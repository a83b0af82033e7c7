"""Adds the MTCNN weights in use (``MTCNN_CAFFE_WEIGHTS`` or the default) to ``mtcnn-caffe doctor``.

No subcommand of its own: the shared ``doctor`` (:mod:`caffe_common.commands.doctor`) knows nothing of
faces, so this CLI registers the check when its parser is built.
"""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Register :func:`mtcnn_caffe.nets.weights.doctor_checks` with the doctor (adds no subcommand)."""
    from caffe_common.doctor import register_checks

    from ..nets.weights import doctor_checks

    register_checks("mtcnn weights", doctor_checks)
