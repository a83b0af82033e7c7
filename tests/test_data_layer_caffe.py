"""LMDB round trip through a real Caffe net: the Python data layer reads what gen_net_imdb wrote."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mtcnn_caffe.data import pack
from mtcnn_caffe.data.landmarks import LandmarkParams
from mtcnn_caffe.data.lmdb_io import RecordReader
from mtcnn_caffe.data.tasks import LandmarkTask, WiderCropTask, generate
from mtcnn_caffe.data.wider import CropParams
from mtcnn_caffe.net_input import blob_to_images, images_to_blob

from .conftest import write_prototxt
from .test_data_samples import make_landmarks, make_wider

NET = """
name: "feed"
layer {{
  name: "data" type: "Python" top: "data" top: "label" top: "roi" top: "pts"
  python_param {{ module: "mtcnn_caffe.data.layer" layer: "MtcnnRecordDataLayer" param_str: '{params}' }}
}}
layer {{
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 10 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.1 }} }}
}}
"""


@pytest.fixture(scope="module")
def lmdb24(tmp_path_factory):
    root = tmp_path_factory.mktemp("layer")
    anno, images = make_wider(root / "wider")
    lst, lm_root = make_landmarks(root / "lm")
    generate(WiderCropTask(anno, images, 24, CropParams()), root / "w24", jobs=1, progress=False)
    generate(LandmarkTask(lst, lm_root, 24, LandmarkParams()), root / "l24", jobs=1, progress=False)
    pack.pack_stage(24, [root / "w24", root / "l24"], root / "p24", ratio="3:1:1:2", progress=False)
    return root / "p24" / "data.lmdb"


def test_data_layer_feeds_a_real_net(caffe, lmdb24, tmp_path):
    batch = 32
    params = json.dumps({"source": str(lmdb24), "batch_size": batch})
    net = caffe.Net(write_prototxt(tmp_path, NET.format(params=params)), caffe.TRAIN)
    assert net.blobs["data"].data.shape == (batch, 3, 24, 24)
    assert net.blobs["conv1"].data.shape == (batch, 10, 22, 22)
    with RecordReader(lmdb24) as reader:
        count = len(reader)
        expected = reader.read(0, 3 * batch)
    assert count > batch
    for step in range(3):
        net.forward()
        want = expected[step * batch:(step + 1) * batch]
        np.testing.assert_allclose(net.blobs["data"].data, images_to_blob(want["image"]), atol=1e-6)
        np.testing.assert_array_equal(net.blobs["label"].data, want["label"])
        np.testing.assert_allclose(net.blobs["roi"].data, want["bbox"])
        np.testing.assert_allclose(net.blobs["pts"].data, want["landmark"])
    # the net input convention is images_to_blob's: it inverts back to the stored uint8 BGR crops
    np.testing.assert_allclose(blob_to_images(net.blobs["data"].data), want["image"], atol=1e-3)
    labels = set(net.blobs["label"].data.tolist())
    assert labels <= {1.0, 0.0, -1.0, -2.0} and len(labels) > 1


def test_data_layer_rejects_bad_param_str_with_a_clear_error(caffe, tmp_path):
    from mtcnn_caffe.data.layer import parse_param_str

    with pytest.raises(ValueError, match="needs a 'source'"):
        parse_param_str('{"batch_size": 4}')
    with pytest.raises(ValueError, match="must be JSON"):
        parse_param_str("source: x")
    with pytest.raises(FileNotFoundError, match="no data.mdb"):
        RecordReader(tmp_path)
