"""The one image reader: BGR uint8 from any common input, file-named errors, data wrapper."""
import cv2
import numpy as np
import pytest

from mtcnn_caffe.data.images import load_image
from caffe_common.images import ImageReadError, read_image


def test_reader_converts_gray_16bit_and_alpha(tmp_path):
    gray = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "deep.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([gray, gray, gray, np.full_like(gray, 255)]))
    for name in ("gray.png", "deep.png", "alpha.png"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3), name
        np.testing.assert_array_equal(image[..., 1], gray)


def test_bad_files_name_the_file_and_data_loader_returns_the_reason(tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"corrupt\.jpg: cannot decode"):
        read_image(tmp_path / "corrupt.jpg")
    with pytest.raises(ImageReadError, match=r"nope\.jpg: no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)
    image, reason = load_image(tmp_path / "corrupt.jpg")
    assert image is None and reason.startswith(f"{tmp_path / 'corrupt.jpg'}: cannot decode")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((4, 5, 3), np.uint8))
    image, reason = load_image(tmp_path / "ok.png")
    assert reason is None and image.shape == (4, 5, 3)
