"""mtcnn-caffe: MTCNN face detection + 5-point alignment on real Caffe.

What is about faces lives here (:mod:`.detect`, :mod:`.nets`, :mod:`.data`, :mod:`.evaluation`);
what both detectors share lives in :mod:`caffe_common`.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import mtcnn_caffe` stays light (no cv2/Caffe) until the detector is asked for.
    if name in ("MtcnnDetector", "Face"):
        from .detect import cascade

        return getattr(cascade, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
