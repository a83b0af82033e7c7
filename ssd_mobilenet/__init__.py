"""MobileNet-SSD object detection on real Caffe (network generation, training, evaluation, export)."""
__version__ = "0.1.0"
