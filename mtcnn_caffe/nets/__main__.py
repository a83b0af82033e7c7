"""``python -m mtcnn_caffe.nets [DIR]``: write the deploy prototxts (default: ``prototxt/mtcnn``)."""
import sys

from .deploy import main

sys.exit(main())
