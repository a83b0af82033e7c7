"""Shared geometry (IoU in both pixel conventions) and the net input convention."""
import numpy as np
import pytest

from caffe_common.boxes import box_area, iou_matrix, iou_one_to_many
from mtcnn_caffe.net_input import blob_to_images, images_to_blob


def test_iou_continuous_and_inclusive_conventions():
    a = np.array([0, 0, 10, 10])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(iou_one_to_many(a, b), [50 / 150, 0, 1])
    # Inclusive pixels: 11x11 boxes overlapping on 6x11.
    np.testing.assert_allclose(iou_one_to_many(a, b[:1], pixel_offset=1), [66 / (121 + 121 - 66)])
    # Min mode: intersection over the smaller box.
    small = np.array([[2, 2, 4, 4]])
    np.testing.assert_allclose(iou_one_to_many(a, small, mode="min"), [1.0])
    np.testing.assert_allclose(iou_matrix(a[None], b), iou_one_to_many(a, b)[None])
    assert box_area(np.array([[3, 3, 1, 1]]))[0] == 0
    with pytest.raises(ValueError):
        iou_one_to_many(a, b, mode="bogus")


def test_images_to_blob_is_rgb_scaled_and_transposed():
    img = np.zeros((4, 6, 3), np.uint8)
    img[1, 5] = (10, 20, 30)  # BGR pixel at row 1, col 5
    blob = images_to_blob(img)
    assert blob.shape == (1, 3, 6, 4)  # (N, C, W, H)
    np.testing.assert_allclose(blob[0, :, 5, 1], (np.array([30, 20, 10]) - 127.5) / 128)
    np.testing.assert_allclose(blob_to_images(blob)[0], img, atol=1e-4)
