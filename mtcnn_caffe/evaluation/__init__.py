"""Face benchmarks, computed as their owners compute them.

* :mod:`.wider`: WIDER FACE AP (easy / medium / hard, official MATLAB protocol).
* :mod:`.fddb`: FDDB discrete and continuous ROC (official ``evaluate`` protocol).
* :mod:`.landmarks`: 5-point landmark NME, failure rate, CED.

They share the generic pieces of :mod:`caffe_common.eval` (the one VOC AP implementation,
plots, atomic outputs, reports, the problem log); the Pascal VOC evaluator lives there too.
"""
from caffe_common.eval.common import EvaluationError, ProblemLog

__all__ = ["EvaluationError", "ProblemLog"]
