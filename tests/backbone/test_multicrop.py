"""Section 7's 1/10/144-crop testing and ensemble averaging."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from backbone.errors import InputError
from backbone.multicrop import ensemble_probabilities, evaluate_multicrop, multicrop, scales_for
from backbone.preprocess import Preprocessing, preprocess


def _image(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_scales_are_the_papers_and_scale_with_the_crop():
    assert scales_for(224) == (256, 288, 320, 352)
    assert scales_for(112) == (128, 144, 160, 176)


def test_144_crops_follow_section_7_landscape():
    p = Preprocessing(resize=32, crop=28)
    image = _image(32, 48)  # shorter side already the first scale (32 = 28 * 256 / 224)
    out = multicrop(image, 144, p)
    assert out.shape == (144, 3, 28, 28) and out.dtype == torch.uint8
    x = torch.from_numpy(image).permute(2, 0, 1)
    left, centre, right = x[:, :, :32], x[:, :, 8:40], x[:, :, 16:48]
    assert torch.equal(out[0], left[:, :28, :28])             # scale 0, left square, top-left corner
    assert torch.equal(out[4], left[:, 2:30, 2:30])           # ... centre crop
    assert torch.equal(out[5], TF.resize(left, [28, 28], antialias=True))  # ... whole square resized
    assert torch.equal(out[6:12], out[0:6].flip(-1))          # ... mirrors
    assert torch.equal(out[12 + 3], centre[:, 4:, 4:])        # centre square, bottom-right corner
    assert torch.equal(out[24 + 1], right[:, :28, 4:])        # right square, top-right corner
    # all 24 squares (4 scales x 3) contribute 6 crops and 6 mirrors
    for s in range(0, 144, 12):
        assert torch.equal(out[s + 6:s + 12], out[s:s + 6].flip(-1))


def test_144_crops_portrait_take_top_centre_bottom_squares():
    p = Preprocessing(resize=32, crop=28)
    image = _image(48, 32, seed=1)
    out = multicrop(image, 144, p)
    x = torch.from_numpy(image).permute(2, 0, 1)
    assert torch.equal(out[0], x[:, :28, :28])
    assert torch.equal(out[12], x[:, 8:36, :28])
    assert torch.equal(out[24 + 2], x[:, 20:, :28])   # bottom square (rows 16..48), bottom-left corner


def test_10_and_1_crop():
    p = Preprocessing(resize=40, crop=32)
    image = _image(50, 70, seed=2)
    ten = multicrop(image, 10, p)
    resized = TF.resize(torch.from_numpy(image).permute(2, 0, 1), [40], antialias=True)
    assert ten.shape == (10, 3, 32, 32)
    assert torch.equal(ten[0], resized[:, :32, :32])
    assert torch.equal(ten[5:], ten[[1, 0, 3, 2, 4]].flip(-1))  # mirrors: top-right of the mirror = top-left
    one = multicrop(image, 1, p)
    assert torch.allclose(p.normalize(one[0].float() / 255), preprocess(image, p))
    with pytest.raises(ValueError):
        multicrop(image, 12, p)


class _ColourModel(nn.Module):
    """Predicts class 0/1/2 for red/green/blue images: logits = 20 * per-channel mean of the input."""

    def forward(self, x):
        return 20 * x.mean(dim=(2, 3))


class _Ranked(nn.Module):
    """Same ranking for every input: class k-1 first, then k-2, ..."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.arange(self.k, dtype=torch.float32).expand(x.shape[0], self.k)


def test_ensemble_probabilities_average_over_crops_and_models():
    p = Preprocessing(resize=16, crop=16)
    crops = torch.randint(0, 256, (2, 10, 3, 16, 16), dtype=torch.uint8)
    a = ensemble_probabilities([_ColourModel()], [crops], [p], device=torch.device("cpu"), chunk=7)
    manual = torch.softmax(_ColourModel()(p.normalize(crops.flatten(0, 1).float() / 255)), 1).view(2, 10, 3).mean(1)
    assert torch.allclose(a, manual, atol=1e-6)
    both = ensemble_probabilities([_ColourModel(), _Ranked()], [crops, crops], [p, p], device=torch.device("cpu"))
    single_const = ensemble_probabilities([_Ranked()], [crops], [p], device=torch.device("cpu"))
    assert torch.allclose(both, (a + single_const) / 2, atol=1e-6)
    assert torch.allclose(both.sum(1), torch.ones(2))


def _colour_folder(tmp_path, n=2):
    samples = []
    for label, bgr in enumerate([(0, 0, 255), (0, 255, 0), (255, 0, 0)]):  # red, green, blue
        for i in range(n):
            path = tmp_path / f"c{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img = np.zeros((20 + i, 24, 3), np.uint8)
            img[:] = bgr
            cv2.imwrite(str(path), img)
            samples.append((path, label))
    return samples


@pytest.mark.parametrize("crops", [1, 10, 144])
def test_evaluate_multicrop_top1_top5(tmp_path, crops):
    samples = _colour_folder(tmp_path)
    p = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), resize=16, crop=14)
    good = evaluate_multicrop([_ColourModel()], [p], samples, crops=crops, batch_size=64, workers=0)
    assert (good.images, good.top1, good.top5, good.crops) == (6, 1.0, 1.0, crops)
    const = evaluate_multicrop([_Ranked(k=6)], [p], samples, crops=crops, batch_size=64, workers=0)
    assert const.top1 == 0.0 and const.top5 == pytest.approx(4 / 6)  # top 5 = classes 5..1: labels 1, 2 hit
    assert const.to_dict()["top1_error"] == 1.0


@pytest.mark.parametrize("workers", [0, 1])
def test_evaluate_multicrop_names_a_corrupt_image(tmp_path, workers):
    samples = _colour_folder(tmp_path, n=1)
    bad = tmp_path / "c0" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xffjunk")
    with pytest.raises(InputError, match=r"bad\.jpg: not a readable image"):
        evaluate_multicrop([_ColourModel()], [Preprocessing(resize=16, crop=14)], samples + [(bad, 0)],
                           crops=1, workers=workers)
