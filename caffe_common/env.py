"""One place to import pycaffe: quiet by default, verbose on request.

Caffe logs through glog, which reads ``GLOG_minloglevel`` once, when the
``_caffe`` extension initialises. The level therefore has to be chosen
*before* the first ``import caffe`` of the process; every module of this
project imports Caffe through :func:`import_caffe` so the choice is honoured.
"""
from __future__ import annotations

import os
import sys
from types import ModuleType

_QUIET_LEVEL = "2"   # glog: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL
_VERBOSE_LEVEL = "0"


class CaffeUnavailableError(RuntimeError):
    """Raised when pycaffe cannot be imported (``make setup`` not run?)."""


def set_caffe_verbosity(verbose: bool) -> None:
    """Choose Caffe's log level; effective only before Caffe is first imported."""
    os.environ["GLOG_minloglevel"] = _VERBOSE_LEVEL if verbose else _QUIET_LEVEL


def import_caffe(verbose: bool | None = None) -> ModuleType:
    """Import and return the ``caffe`` module in CPU mode.

    ``verbose=None`` keeps an explicit ``GLOG_minloglevel`` from the
    environment and otherwise silences Caffe's INFO/WARNING chatter.
    """
    if "caffe" not in sys.modules:
        if verbose is not None:
            set_caffe_verbosity(verbose)
        else:
            os.environ.setdefault("GLOG_minloglevel", _QUIET_LEVEL)
    try:
        import caffe  # noqa: WPS433 (deliberately late import)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CaffeUnavailableError(
            f"pycaffe cannot be imported ({exc}); run `make setup` and use the "
            "project's .venv (source .venv/bin/activate)"
        ) from exc
    caffe.set_mode_cpu()
    return caffe
