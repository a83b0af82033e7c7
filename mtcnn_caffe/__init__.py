"""mtcnn-caffe: MTCNN face detection + alignment (and MobileNet-SSD) on real Caffe."""
__version__ = "0.1.0"
