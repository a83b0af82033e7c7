"""MTCNN training data: sample generation, hard-example mining, packing into LMDB / imdb.

Modules:

* :mod:`.records`: the sample/record formats and conventions (crop: uint8 BGR ``s x s x 3``;
  labels pos 1 / neg 0 / part -1 / landmark -2; box and landmark target definitions).
* :mod:`.crops`: IoU labelling, regression targets, crop + resize.
* :mod:`.wider`, :mod:`.landmarks`, :mod:`.mining`: the three sample sources.
* :mod:`.pipeline`, :mod:`.tasks`: parallel, deterministic, resumable generation into a directory.
* :mod:`.pack`, :mod:`.lmdb_io`: ``gen_net_imdb``: ratio mixing, the training LMDB, imdb pickles.

Importing this package does not import Caffe; the Caffe data layer reading the LMDB is
:class:`mtcnn_caffe.train.layers.MtcnnBatchLayer`.
"""
from .lmdb_io import LMDB_NAME, RecordReader, stage_lmdb_path
from .records import LABELS, LANDMARK, NEGATIVE, PART, POSITIVE, decode_records, record_dtype, sample_dtype

__all__ = [
    "LABELS", "LANDMARK", "LMDB_NAME", "NEGATIVE", "PART", "POSITIVE", "RecordReader", "decode_records",
    "record_dtype", "sample_dtype", "stage_lmdb_path",
]
