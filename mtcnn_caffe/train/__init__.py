"""MTCNN training: the batch plan (:mod:`.batches`), the mixing data layer (:mod:`.layers`; the masked
Euclidean and OHEM losses it trains with are shared with SSD in :mod:`caffe_common.loss_layers`) and one
stage's training run (:mod:`.stage`), on the shared loop :mod:`caffe_common.solver`."""
