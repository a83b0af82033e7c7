"""MTCNN training: the batch plan (:mod:`.batches`), the Caffe layers (:mod:`.layers`: mixing data layer,
masked Euclidean and OHEM losses) and one stage's training run (:mod:`.stage`), on the shared loop
:mod:`caffe_common.solver`."""
