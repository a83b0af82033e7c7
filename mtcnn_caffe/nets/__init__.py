"""The MTCNN networks: deploy definitions of the three stages (:mod:`.deploy`, generated with
Caffe's NetSpec; ``python -m mtcnn_caffe.nets`` rewrites ``prototxt/mtcnn/``) and the conversion
of the default weights (:mod:`.weights`)."""
from .deploy import INPUT_SIZES, OUTPUT_BLOBS, STAGES, deploy_net, deploy_prototxt_text, write_deploy_prototxts

__all__ = ["INPUT_SIZES", "OUTPUT_BLOBS", "STAGES", "deploy_net", "deploy_prototxt_text", "write_deploy_prototxts"]
