"""Section 6's training augmentation and the ImageFolder reader."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.augment import AugmentConfig, TrainTransform, photometric_distort, sample_crop
from backbone.errors import InputError
from backbone.folder import ImageFolder, find_classes
from backbone.preprocess import Preprocessing


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), seed=st.integers(0, 2**32 - 1))
def test_sample_crop_stays_inside_the_image(h, w, seed):
    top, left, ch, cw = sample_crop(h, w, np.random.default_rng(seed))
    assert 0 <= top and 0 <= left and ch >= 1 and cw >= 1
    assert top + ch <= h and left + cw <= w


def test_sample_crop_area_and_aspect_follow_section_6():
    rng = np.random.default_rng(0)
    crops = [sample_crop(300, 400, rng) for _ in range(2000)]
    area = np.array([ch * cw / (300 * 400) for _, _, ch, cw in crops])
    aspect = np.array([cw / ch for _, _, ch, cw in crops])
    assert area.min() >= 0.075 and area.max() <= 1.0
    assert np.quantile(aspect, 0.01) >= 0.74 and np.quantile(aspect, 0.99) <= 1.35
    # area is uniform on [0.08, 1] where the patch fits: its median sits well above the log-uniform one
    assert 0.4 < np.median(area) < 0.6
    assert abs(np.mean(np.log(aspect))) < 0.05  # symmetric about 1 in log space


def test_sample_crop_falls_back_to_a_centred_clamped_patch():
    top, left, h, w = sample_crop(10, 1000, np.random.default_rng(0), scale=(0.99, 1.0))
    assert h == 10 and math.isclose(w / h, 4 / 3, rel_tol=0.1) and left == (1000 - w) // 2


def test_train_transform_shape_normalisation_and_determinism():
    image = (np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)
    t = TrainTransform(AugmentConfig(size=32), Preprocessing(resize=37, crop=32))
    a = t(image, np.random.default_rng(5))
    b = t(image, np.random.default_rng(5))
    c = t(image, np.random.default_rng(6))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = t(image)  # no rng: seeded from torch's generator, as the engine does per sample
    torch.manual_seed(3)
    assert torch.equal(d, t(image))


def test_without_distortion_a_full_crop_is_a_plain_resize():
    image = (np.random.default_rng(2).random((40, 40, 3)) * 255).astype(np.uint8)
    cfg = AugmentConfig(size=20, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolations=("area",), brightness=0,
                        contrast=0, saturation=0, hue=0, hflip=0)
    p = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), resize=20, crop=20)
    out = TrainTransform(cfg, p)(image, np.random.default_rng(0))
    expected = cv2.resize(image, (20, 20), interpolation=cv2.INTER_AREA)
    assert torch.allclose(out, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
    flipped = TrainTransform(AugmentConfig(**{**cfg.to_dict(), "hflip": 1.0}), p)(image, np.random.default_rng(0))
    assert torch.equal(flipped, out.flip(-1))


def test_photometric_distortion_changes_colours_but_not_grey_hue():
    grey = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    out = photometric_distort(grey, np.random.default_rng(0), brightness=0, contrast=0, saturation=0.5, hue=0.05)
    assert torch.equal(out, grey)  # no saturation or hue in a grey image
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    out = photometric_distort(img, np.random.default_rng(0), brightness=0.5, contrast=0.5, saturation=0.5, hue=0.05)
    assert out.dtype == torch.uint8 and out.shape == img.shape and not torch.equal(out, img)


def test_augment_config_validates_and_round_trips():
    with pytest.raises(ValueError):
        AugmentConfig(interpolations=("lanczos",))
    with pytest.raises(ValueError):
        AugmentConfig(scale=(0.5, 0.1))
    cfg = AugmentConfig(size=64)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg


def _write(path, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 128, np.uint8))


def test_image_folder_labels_and_errors(tmp_path):
    _write(tmp_path / "data" / "cat" / "a.png")
    _write(tmp_path / "data" / "cat" / "sub" / "b.jpg")
    _write(tmp_path / "data" / "dog" / "c.png")
    (tmp_path / "data" / "dog" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path / "data")
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 1] and len(ds) == 3
    image, label = ds[2]
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8 and label == 1
    mapped = ImageFolder(tmp_path / "data", class_names=["ant", "cat", "dog"])
    assert mapped.targets == [1, 1, 2]
    with pytest.raises(InputError, match="1 class folders \\(dog\\) are not among the 2 classes"):
        ImageFolder(tmp_path / "data", class_names=["ant", "cat"])

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder; expected the ImageNet layout"):
        find_classes(tmp_path / "empty")
    _write(tmp_path / "flat" / "x.png")
    with pytest.raises(InputError, match="1 images but no class subfolders"):
        ImageFolder(tmp_path / "flat")
    with pytest.raises(InputError, match="no such folder"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "data" / "eel").mkdir()
    with pytest.raises(InputError, match="eel: class folder has no image files"):
        ImageFolder(tmp_path / "data")


def test_image_folder_names_a_corrupt_image_when_it_is_read(tmp_path):
    _write(tmp_path / "cat" / "good.png")
    (tmp_path / "cat" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    ds = ImageFolder(tmp_path)
    with pytest.raises(InputError, match=r"bad\.jpg: not a readable image"):
        ds[0]
    assert ds[1][0].shape == (12, 10, 3)
