"""Evaluation suite: the benchmark protocols as their owners compute them.

* :mod:`.wider`: WIDER FACE AP (easy / medium / hard, official MATLAB protocol).
* :mod:`.fddb`: FDDB discrete and continuous ROC (official ``evaluate`` protocol).
* :mod:`.landmarks`: 5-point landmark NME, failure rate, CED.
* :mod:`.voc`: Pascal VOC mAP (VOC07 11-point and all-point, devkit protocol).

All of them share :mod:`.curves` (the one VOC AP implementation), write their
summaries with :mod:`.outputs` and draw with :mod:`.plots`.
"""
from .common import EvaluationError, ProblemLog

__all__ = ["EvaluationError", "ProblemLog"]
