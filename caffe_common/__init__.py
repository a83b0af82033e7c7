"""The shared Caffe core of mtcnn-caffe: what both detectors (MTCNN faces, MobileNet-SSD) use.

Caffe import and environment (:mod:`.env`), prototxt/caffemodel reading and validation
(:mod:`.model_files`), BatchNorm folding (:mod:`.merge_bn`), atomic files (:mod:`.atomic`),
pinned third-party assets (:mod:`.assets`), the CLI framework (:mod:`.cli`) and the shared
subcommands (:mod:`.commands`), ``doctor``, box geometry (:mod:`.boxes`), the image reader
(:mod:`.images`), text/XML readers with skip-and-count errors (:mod:`.textio`) and the
generic evaluation pieces (:mod:`.eval`). Nothing here imports ``mtcnn_caffe`` or
``ssd_mobilenet``.
"""
