"""RegionClassifier checkpoints, Ensemble averaging and class-list checks, on small random models."""

from __future__ import annotations

import pytest
import torch

from backbone.errors import InputError
from backbone.preprocess import Preprocessing
from detect.classifier import BACKGROUND, Ensemble, RegionClassifier
from detect.crops import CropConfig, normalize, warp_regions

CROP = CropConfig(size=64, padding=8)
NAMES = ["cat", "dog", "person"]


def _member(seed: int, names=NAMES, crop=CROP, **kwargs) -> RegionClassifier:
    torch.manual_seed(seed)
    return RegionClassifier.from_backbone(names, variant="paper", weights=None, crop=crop, aux_logits=False,
                                          **kwargs).eval()


def _image_and_boxes():
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 48, 80), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 30.0], [20.0, 10.0, 80.0, 48.0], [5.0, 5.0, 9.0, 12.0]])
    return image, boxes


def _manual_probs(member: RegionClassifier, image, boxes) -> torch.Tensor:
    p = member.preprocessing
    crops = warp_regions(image, boxes, size=member.crop.size, padding=member.crop.padding,
                         fill=[v * 255 for v in p.mean])
    with torch.no_grad():
        return torch.softmax(member(normalize(crops, p.mean, p.std)), dim=1)


def test_checkpoint_round_trip(tmp_path):
    rc = _member(0, category_ids=[17, 18, 1])
    path = tmp_path / "rc.pt"
    rc.save(path, config={"note": "test"})
    raw = torch.load(path, weights_only=True)
    assert raw["task"] == "region_classifier" and raw["class_names"] == [BACKGROUND, *NAMES]
    assert raw["crop"] == {"size": 64, "padding": 8, "sampling_ratio": 0} and raw["category_ids"] == [17, 18, 1]
    back = RegionClassifier.load(path)
    assert back.class_names == NAMES and back.category_ids == [17, 18, 1] and back.crop == CROP
    assert back.preprocessing == rc.preprocessing and back.source == str(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(back(x), rc(x), atol=1e-5)
    assert back(x).shape == (2, 4)


def test_load_refuses_a_backbone_checkpoint(tmp_path):
    from backbone.checkpoint import save_checkpoint
    from backbone.weights import googlenet

    path = tmp_path / "backbone.pt"
    save_checkpoint(path, googlenet(variant="paper", num_classes=3, aux_logits=False), class_names=["a", "b", "c"],
                    preprocessing=Preprocessing(), config={})
    with pytest.raises(InputError, match="not a region-classifier checkpoint"):
        RegionClassifier.load(path)


def test_ensemble_averages_member_softmax():
    image, boxes = _image_and_boxes()
    a, b = _member(0), _member(1)
    c = _member(2, crop=CropConfig(size=32, padding=4))  # another crop config: its own crops
    ens = Ensemble([a, b, c])
    probs = ens.classify(image, boxes, batch_size=2)
    expected = (_manual_probs(a, image, boxes) + _manual_probs(b, image, boxes) + _manual_probs(c, image, boxes)) / 3
    assert probs.shape == (3, 4)
    assert torch.allclose(probs, expected, atol=1e-5)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert ens.classify(image, torch.zeros((0, 4))).shape == (0, 4)
    single = Ensemble([a]).classify(image, boxes, channels_last=False)
    assert torch.allclose(single, _manual_probs(a, image, boxes), atol=1e-5)


def test_ensemble_refuses_mixed_class_lists(tmp_path):
    a, b = _member(0), _member(1, names=["cat", "dog", "horse"])
    pa, pb = tmp_path / "a.pt", tmp_path / "b.pt"
    a.save(pa)
    b.save(pb)
    with pytest.raises(InputError) as err:
        Ensemble.from_checkpoints([pa, pb])
    assert str(pa) in str(err.value) and str(pb) in str(err.value)
    ens = Ensemble.from_checkpoints([pa, pa])
    assert len(ens) == 2 and ens.class_names == NAMES


@pytest.mark.gpu
def test_cuda_bf16_close_to_cpu_fp32():
    image, boxes = _image_and_boxes()
    a, b = _member(0), _member(1)
    cpu = Ensemble([a, b]).classify(image, boxes)
    ens = Ensemble([a, b]).to("cuda")
    gpu = ens.classify(image, boxes, amp=True)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert (gpu.cpu() - cpu).abs().max() < 0.02
