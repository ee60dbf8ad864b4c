"""read_image: the one image reader, on real and synthetic files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from backbone.errors import InputError
from backbone.images import read_image


def test_reads_real_photo_as_rgb(tmp_path):
    rgb = skimage.data.astronaut()
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("channels", [None, 4])
def test_grayscale_and_rgba_become_rgb(tmp_path, channels):
    shape = (7, 9) if channels is None else (7, 9, channels)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.full(shape, 200, np.uint8))
    assert read_image(path).shape == (7, 9, 3)


def test_16bit_png_becomes_8bit(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((4, 5, 3), 65535, np.uint16))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.max() == 255


@pytest.mark.parametrize("make, problem", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("hello, not a picture"), "not a readable image"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(path) in str(info.value) and problem in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_is_refused(tmp_path):
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), skimage.data.astronaut()[:, :, ::-1])
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated|not a readable"):
        read_image(bad)


def test_huge_image_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(InputError, match="above the"):
        read_image(path, max_pixels=100_000)
