"""Evaluation pieces both detectors share: the one VOC AP implementation (:mod:`.curves`),
the Pascal VOC evaluator (:mod:`.voc`), plots, atomic outputs, reports and the problem log.
Benchmark-specific evaluators stay with their detector (``mtcnn_caffe.evaluation``)."""
from .common import EvaluationError, ProblemLog

__all__ = ["EvaluationError", "ProblemLog"]
