"""Environment checks behind ``doctor``: is this a working toolkit?

The shared checks (Caffe and its layers, OpenCV DNN, LMDB, BLAS) are here; a CLI adds its own
with :func:`register_checks` when it is built (``mtcnn-caffe`` adds the weights in use), so this
package needs to know nothing of the detectors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

#: Caffe layers the toolkit relies on (Python data/loss layers, the SSD family, and the native depthwise
#: convolution of the project's build patch).
REQUIRED_LAYERS = ("Python", "PriorBox", "MultiBoxLoss", "DetectionOutput", "AnnotatedData", "Permute", "Normalize",
                   "ConvolutionDepthwise")


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str


def check_caffe() -> list[Check]:
    """Caffe importable, and its layer registry has every layer in :data:`REQUIRED_LAYERS`."""
    from .env import CaffeUnavailableError, import_caffe

    try:
        caffe = import_caffe()
    except CaffeUnavailableError as exc:
        return [Check("caffe", False, str(exc))]
    layers = set(caffe.layer_type_list())
    checks = [Check("caffe", True, f"version {caffe.__version__} from {os.path.dirname(caffe.__file__)}")]
    for layer in REQUIRED_LAYERS:
        checks.append(Check(f"caffe layer {layer}", layer in layers, "registered" if layer in layers else "missing"))
    return checks


def check_opencv() -> list[Check]:
    """OpenCV importable and able to read Caffe models (OpenCV 5 dropped the importer)."""
    try:
        import cv2
    except ImportError as exc:
        return [Check("opencv", False, str(exc))]
    has_importer = hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromCaffe")
    return [
        Check("opencv", True, f"version {cv2.__version__}"),
        Check("opencv dnn readNetFromCaffe", has_importer, "available" if has_importer else "missing (needs opencv<5)"),
    ]


def check_lmdb() -> list[Check]:
    """The lmdb binding can open and write an environment."""
    import tempfile

    try:
        import lmdb
    except ImportError as exc:
        return [Check("lmdb", False, str(exc))]
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(tmp, map_size=1 << 20)
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v")
        with env.begin() as txn:
            ok = txn.get(b"k") == b"v"
        env.close()
    return [Check("lmdb", ok, f"version {lmdb.version()} read/write {'ok' if ok else 'failed'}")]


def blas_threads() -> Check:
    """How many threads OpenBLAS (used by Caffe) will start; informational."""
    value = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    detail = f"OPENBLAS_NUM_THREADS={value}" if value else f"default (all {os.cpu_count()} cores)"
    return Check("blas threads", True, detail)


def blas_kernels() -> Check:
    """The kernel set Caffe's OpenBLAS runs; OpenBLAS's generic ``Prescott`` set on a CPU that has a faster
    one fails (see :mod:`caffe_common.env`: convolutions about 4x slower)."""
    from .env import CaffeUnavailableError, cpu_flags, import_caffe, openblas_coretype, openblas_kernels

    try:
        import_caffe()
    except CaffeUnavailableError as exc:
        return Check("blas kernels", False, str(exc))
    found, best = openblas_kernels(), openblas_coretype(cpu_flags())
    setting = os.environ.get("OPENBLAS_CORETYPE", "unset")
    if found == "Prescott" and best:
        return Check("blas kernels", False, f"OpenBLAS runs its generic Prescott kernels (OPENBLAS_CORETYPE={setting}) "
                                            f"on a CPU that runs {best}: set OPENBLAS_CORETYPE={best}")
    return Check("blas kernels", True, f"{found or 'not OpenBLAS'} (OPENBLAS_CORETYPE={setting})")


CheckProvider = Callable[[], "list[Check]"]
_REGISTERED: dict[str, CheckProvider] = {}


def register_checks(name: str, provider: CheckProvider) -> None:
    """Add ``provider`` (returns :class:`Check` lines) to :func:`run_checks`, after the shared checks;
    registering ``name`` again replaces it."""
    _REGISTERED[name] = provider


def _registered_checks() -> list[Check]:
    checks = []
    for name, provider in _REGISTERED.items():
        try:
            checks += provider()
        except Exception as exc:  # noqa: BLE001 - a broken check is a failed line, not a crashed doctor
            checks.append(Check(name, False, f"the check itself failed: {type(exc).__name__}: {exc}"))
    return checks


def run_checks() -> list[Check]:
    """All checks, in report order: the shared ones, then those of :func:`register_checks`."""
    return check_caffe() + check_opencv() + check_lmdb() + [blas_threads(), blas_kernels()] + _registered_checks()


def format_report(checks: list[Check]) -> str:
    """Human-readable report, one ``[ ok ]``/``[FAIL]`` line per check."""
    lines = [f"[{' ok ' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in checks]
    failed = sum(not c.ok for c in checks)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)
