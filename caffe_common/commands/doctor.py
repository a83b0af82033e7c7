"""``doctor``: report whether Caffe, its layers, OpenCV DNN and LMDB are usable, plus the checks the
running CLI registered (:func:`caffe_common.doctor.register_checks`)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="check the installation (Caffe layers, OpenCV DNN, LMDB, BLAS, and the CLI's own "
                           "checks: mtcnn-caffe checks the face weights in use)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..doctor import format_report, run_checks

    checks = run_checks()
    print(format_report(checks))
    return 0 if all(c.ok for c in checks) else 1
