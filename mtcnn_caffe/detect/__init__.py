"""The MTCNN face detector: the cascade (:mod:`.cascade`), its vectorised steps (:mod:`.steps`:
pyramid, candidate windows, NMS, box regression, crops), the inference backends (:mod:`.backends`:
pycaffe, OpenCV DNN) and running it over many images (:mod:`.io`).

Imports here are lazy so that ``import mtcnn_caffe.detect`` needs neither OpenCV nor Caffe.
"""


def __getattr__(name):
    if name in ("MtcnnDetector", "Face", "PRESETS"):
        from . import cascade

        return getattr(cascade, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
