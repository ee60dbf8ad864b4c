"""The CPU speed-ups of region classification give the plain path's results (issue 14, part 3).

Plain path = what the paper's pipeline computes: a GoogLeNet with its BatchNorm layers, NCHW crops from
``iter_warped`` (mean fill) normalised by ``normalize``, fp32. The optimised path (``Ensemble.classify``
after ``prepare_for_inference_``): BatchNorm folded, conv + ReLU as one oneDNN kernel, channels_last, crops
normalised inside the warp (``iter_normalized``), repeated boxes classified once, bf16 only where the CPU
has it natively.

Tolerances (float32 rounding; probabilities are in 0..1): crops 1e-4 (values in about -2.2..2.7),
probabilities 1e-4, detections: same boxes and labels, scores 1e-4. bf16 (emulated here when the CPU lacks
it): random networks amplify rounding (bf16 moves these ones' probabilities by 0.025 on average, up to 0.37;
top class kept on 88-93 % of the crops), so this test only guards the bf16 path against breaking (mean change
< 0.05, top class kept on >= 80 %). The adoption criterion is measured on trained weights with
``bench/classify.py --weights CKPT`` (max change <= 0.01; a trained region classifier: 0.0034, BENCHMARKS.md).

The models are random but BatchNorm-calibrated on real crops and given logits of std 4, so that their
probabilities are spread like a trained model's (an uncalibrated random GoogLeNet outputs 1e-12 logits:
every path would agree trivially).
"""

from __future__ import annotations

import copy

import pytest
import skimage.data
import torch

from backbone.fuse import ConvReLU, prepare_for_inference_
from backbone.googlenet import BasicConv2d
from backbone.weights import googlenet
from detect import classifier as classifier_module
from detect.classifier import Ensemble, RegionClassifier, autocast_dtype
from detect.crops import CropConfig, iter_normalized, iter_warped, normalize
from detect.postprocess import postprocess

CROP = CropConfig(size=64, padding=8)
NAMES = ["cat", "dog", "person", "car", "tree"]


def _photo() -> torch.Tensor:
    return torch.from_numpy(skimage.data.astronaut()[::2, ::2].copy()).permute(2, 0, 1).contiguous()  # 3x256x256


def _boxes(n: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 120 + 4
    return torch.cat([xy, (xy + wh).clamp(max=255)], 1)


def _plain_probs(member: RegionClassifier, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    p = member.preprocessing
    out = []
    with torch.no_grad():
        for crops in iter_warped(image, boxes, crop=member.crop, fill=[v * 255 for v in p.mean], batch_size=16):
            out.append(torch.softmax(member(normalize(crops, p.mean, p.std)), dim=1))
    return torch.cat(out)


def _calibrated(seed: int) -> RegionClassifier:
    """A random torchvision-variant region classifier with BatchNorm statistics of real crops."""
    torch.manual_seed(seed)
    rc = RegionClassifier.from_backbone(NAMES, variant="torchvision", weights=None, crop=CROP, aux_logits=False)
    p = rc.preprocessing
    crops = normalize(next(iter_warped(_photo(), _boxes(32, seed=seed + 100), crop=CROP,
                                       fill=[v * 255 for v in p.mean], batch_size=32)), p.mean, p.std)
    for m in rc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the one calibration batch
    rc.train()
    with torch.no_grad():
        rc(crops)
        rc.eval()
        rc.model.fc.weight.mul_(4.0 / rc(crops).std())
    return rc


@pytest.fixture(scope="module")
def members() -> list[RegionClassifier]:
    return [_calibrated(0), _calibrated(1)]


def _optimised(members: list[RegionClassifier]) -> Ensemble:
    """What detect.pipeline.load_detector + Detector do on the CPU: fold and fuse, then channels_last."""
    return Ensemble([prepare_for_inference_(copy.deepcopy(m)) for m in members]).to("cpu")


def test_normalised_warp_equals_warp_then_normalize():
    image, boxes = _photo(), _boxes()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    boxes[0] = torch.tensor([-30.0, -20.0, 300.0, 280.0])  # mostly outside: fill everywhere around
    boxes[1] = torch.tensor([10.0, 10.0, 10.0, 50.0])  # zero width
    fused = torch.cat(list(iter_normalized(image, boxes, crop=CROP, mean=mean, std=std, batch_size=16)))
    plain = torch.cat([normalize(c, mean, std) for c in
                       iter_warped(image, boxes, crop=CROP, fill=[v * 255 for v in mean], batch_size=16)])
    assert fused.shape == plain.shape == (len(boxes), 3, 64, 64) and fused.dtype == torch.float32
    assert (fused - plain).abs().max() < 1e-4
    assert len(list(iter_normalized(image, boxes[:0], crop=CROP, mean=mean, std=std))) == 0


def test_optimised_probabilities_equal_plain(members):
    image, boxes = _photo(), _boxes()
    plain = sum(_plain_probs(m, image, boxes) for m in members) / len(members)
    assert plain.max(1).values.median() > 0.3  # spread out, not uniform: the comparison means something
    fast = _optimised(members).classify(image, boxes, batch_size=16, amp=False)
    assert (fast - plain).abs().max() < 1e-4
    assert torch.equal(fast.argmax(1), plain.argmax(1))


def test_optimised_detections_equal_plain(members):
    image, boxes = _photo(), _boxes(60, seed=3)
    plain = postprocess(boxes, sum(_plain_probs(m, image, boxes) for m in members) / len(members),
                        score_threshold=0.05)
    fast = postprocess(boxes, _optimised(members).classify(image, boxes, batch_size=16), score_threshold=0.05)
    assert len(plain) > 5
    assert torch.equal(fast.boxes, plain.boxes) and torch.equal(fast.labels, plain.labels)
    assert (fast.scores - plain.scores).abs().max() < 1e-4


def test_repeated_boxes_are_classified_once(members):
    image, boxes = _photo(), _boxes(12)
    repeated = torch.cat([boxes, boxes[[3, 3, 7]], boxes[:2]])
    ens = _optimised(members[:1])
    seen = []
    ens.members[0].model.register_forward_hook(lambda mod, args, out: seen.append(len(args[0])))
    probs = ens.classify(image, repeated, batch_size=64, amp=False)
    assert sum(seen) == len(boxes)
    alone = ens.classify(image, boxes, batch_size=64, amp=False)
    assert (probs[:12] - alone).abs().max() < 1e-5
    assert torch.equal(probs[12], probs[3]) and torch.equal(probs[14], probs[7]) and torch.equal(probs[16], probs[1])


def test_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(classifier_module, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("cpu") is None and autocast_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(classifier_module, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("cpu") == torch.bfloat16
    assert autocast_dtype("cpu", amp=False) is None and autocast_dtype("cuda", amp=False) is None
    assert autocast_dtype("meta") is None


def test_bf16_probabilities_close_to_fp32(members, monkeypatch):
    """On a CPU with native bf16 the classifier runs bf16 autocast: close to fp32 (see the module docstring)."""
    image, boxes = _photo(), _boxes(40)
    ens = _optimised(members[:1])
    fp32 = ens.classify(image, boxes, amp=False)
    monkeypatch.setattr(classifier_module, "cpu_has_native_bf16", lambda: True)  # emulated here if need be
    bf16 = ens.classify(image, boxes, amp=True)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # the bf16 path did run
    assert torch.allclose(bf16.sum(1), torch.ones(len(boxes)), atol=1e-5)
    assert (bf16 - fp32).abs().mean() < 0.05
    assert (bf16.argmax(1) == fp32.argmax(1)).float().mean() >= 0.8


@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_conv_relu_fusion_equals_plain(variant):
    torch.manual_seed(0)
    model = googlenet(variant=variant, num_classes=10, aux_logits=False).eval()
    fused = prepare_for_inference_(copy.deepcopy(model))
    n_convs = sum(isinstance(m, BasicConv2d) for m in model.modules())
    assert sum(isinstance(m, ConvReLU) for m in fused.modules()) == n_convs == 57
    assert not any(isinstance(m, (BasicConv2d, torch.nn.BatchNorm2d)) for m in fused.modules())
    if variant == "paper":  # nothing folded: the parameters are the same tensors under the same names
        assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(3, 3, 96, 96)
    with torch.inference_mode():
        plain, fast = model(x), fused(x.contiguous(memory_format=torch.channels_last))
        assert plain.abs().max() > 0
        assert ((fast - plain).abs().max() / plain.abs().max()) < 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: conv then ReLU, as before
            assert (fused(x).float() - plain).abs().max() / plain.abs().max() < 0.05
    grad_x = x.clone().requires_grad_()
    assert fused(grad_x).requires_grad  # with gradients: the plain ops, differentiable
