"""One place to import pycaffe: quiet by default, verbose on request, with fast BLAS kernels.

Caffe logs through glog, which reads ``GLOG_minloglevel`` once, when the
``_caffe`` extension initialises. The level therefore has to be chosen
*before* the first ``import caffe`` of the process; every module of this
project imports Caffe through :func:`import_caffe` so the choice is honoured.

The same holds for OpenBLAS (Debian's, linked into Caffe), which picks its kernels
when it loads: Debian 12's OpenBLAS 0.3.21 does not recognise recent CPUs (e.g.
Sapphire Rapids) and falls back to its generic ``Prescott`` SSE3 kernels, about 4x
slower in Caffe's convolutions. :func:`import_caffe` therefore names the kernel set
the CPU supports (``OPENBLAS_CORETYPE``, :func:`openblas_coretype`) unless the
environment already does.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

_QUIET_LEVEL = "2"   # glog: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL
_VERBOSE_LEVEL = "0"
#: OpenBLAS kernel sets (``OPENBLAS_CORETYPE`` values of a DYNAMIC_ARCH build) and the CPU flags they
#: need, best first. Their single-precision GEMM is what Caffe's convolutions spend their time in.
OPENBLAS_KERNELS = (("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
                    ("Haswell", frozenset({"avx2", "fma"})))


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def openblas_coretype(flags: frozenset[str]) -> str | None:
    """The best OpenBLAS kernel set of :data:`OPENBLAS_KERNELS` a CPU with ``flags`` runs, or None."""
    for name, needs in OPENBLAS_KERNELS:
        if needs <= flags:
            return name
    return None


def openblas_kernels() -> str | None:
    """The kernel set of the OpenBLAS that Caffe calls, e.g. ``SkylakeX``; None when Caffe is not loaded
    or its BLAS is not OpenBLAS.

    The symbol is looked up through Caffe's own extension, whose dependencies hold the BLAS it was linked
    with: the process may hold other OpenBLAS copies (OpenCV's and numpy's wheels bundle their own), which
    pick their kernels independently and are not what Caffe's convolutions run on.
    """
    import ctypes

    module = sys.modules.get("caffe._caffe")
    if module is None or not getattr(module, "__file__", None):
        return None
    try:
        get = ctypes.CDLL(module.__file__).openblas_get_corename
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_char_p
    return get().decode()


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
        coretype = openblas_coretype(cpu_flags())
        if coretype:
            os.environ.setdefault("OPENBLAS_CORETYPE", coretype)
    try:
        import caffe  # noqa: WPS433 (deliberately late import)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CaffeUnavailableError(
            f"pycaffe cannot be imported ({exc}); run `make setup` and use the "
            "project's .venv (source .venv/bin/activate)"
        ) from exc
    caffe.set_mode_cpu()
    return caffe
