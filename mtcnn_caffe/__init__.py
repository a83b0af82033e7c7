"""mtcnn-caffe: MTCNN face detection + alignment (and MobileNet-SSD) on real Caffe."""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import mtcnn_caffe` stays light (no cv2/Caffe) until the detector is asked for.
    if name in ("MtcnnDetector", "Face"):
        from . import detector

        return getattr(detector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
