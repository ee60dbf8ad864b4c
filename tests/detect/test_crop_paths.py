"""Training crops and inference crops of the same region are the same network input.

Training (``detect train``): :class:`detect.regions.RegionDataset` warps regions with
:func:`detect.crops.warp_regions` into uint8 crops, and :class:`detect.regions.RegionLoss` normalises them
with the preprocessing mean/std. Inference (``detect run``/``detect eval``): :meth:`Detector.classify_proposals`
-> :meth:`Ensemble.classify` warps with :func:`detect.crops.iter_warped` into float crops (no rounding) and
normalises them with the member's mean/std. The tensors reaching the GoogLeNet are captured with a forward
pre-hook on each side, for the same real photo (scikit-image's astronaut), boxes and :class:`CropConfig`,
mirroring off.

Tolerance: the only difference is the training path's rounding to uint8 (half a grey level at most), so
``|train - infer| <= 0.5 / 255 / std_c`` per channel (0.0087 for the smallest ImageNet std, 0.224); the
tests check that bound per channel, plus float slack of 1e-5. A wrong mean or std (swapped, dropped, or a
different fill) moves values by 0.1 to several units, far outside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data  # a dependency of the project (pyproject), so imported, never skipped
import torch

from backbone.images import read_image
from detect.classifier import Ensemble, RegionClassifier
from detect.crops import CropConfig, image_to_tensor
from detect.datasets import ImageRecord
from detect.pipeline import Detector, DetectorConfig, load_detector
from detect.regions import RegionDataset, RegionLoss, RegionSamplingConfig, TrainView, collate_regions

#: xyxy boxes on the 512 x 512 astronaut: the face, a box touching the left and bottom edges (its context
#: padding reaches outside the image, so the fill counts), a small one, a tall thin one.
BOXES = [[180.0, 30.0, 300.0, 200.0], [0.0, 330.5, 140.0, 512.0], [400.0, 60.0, 430.0, 84.0],
         [300.2, 120.0, 340.7, 480.0]]


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"  # PNG: lossless, both paths read the same pixels
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


class Capture:
    """Forward pre-hook that keeps every input tensor of a module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = module.register_forward_pre_hook(lambda _m, args: self.inputs.append(args[0].detach().clone()))

    def all(self) -> torch.Tensor:
        self.handle.remove()
        return torch.cat(self.inputs).contiguous()


def inference_inputs(detector: Detector, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
    """The normalised tensor the (first) region classifier sees for ``boxes`` of ``image`` at test time."""
    cap = Capture(detector.classifier.members[0].model)
    detector.classify_proposals(image, boxes)
    return cap.all()


def bound(std) -> torch.Tensor:
    """Per-channel bound ``[1, 3, 1, 1]`` of the uint8 rounding after normalisation, plus float slack."""
    return 0.5 / 255 / torch.tensor(std).reshape(1, 3, 1, 1) + 1e-5


def assert_same_input(train: torch.Tensor, infer: torch.Tensor, std) -> None:
    assert train.shape == infer.shape
    diff = (train - infer).abs()
    worst = diff.amax(dim=(0, 2, 3))
    assert bool((diff <= bound(std)).all()), f"max |train - inference| per channel {worst.tolist()}"
    assert float(diff.mean()) < 0.25 / 255 / min(std) + 1e-5  # rounding errors average ~1/4 grey level


@pytest.mark.parametrize("crop", [CropConfig(), CropConfig(size=64, padding=8, sampling_ratio=1)],
                         ids=["224-pad16-adaptive", "64-pad8-bilinear"])
def test_training_and_inference_crops_are_the_same_input(astronaut: Path, crop: CropConfig) -> None:
    torch.manual_seed(0)
    rc = RegionClassifier.from_backbone(["person", "flag"], variant="paper", weights=None, crop=crop)
    p = rc.preprocessing
    image = read_image(astronaut)
    boxes = torch.tensor(BOXES)
    # every box a ground-truth positive (1 per group), and a far-away proposal as background
    record = ImageRecord(1, astronaut, image.shape[1], image.shape[0], boxes, torch.tensor([1, 2, 1, 2]),
                         torch.zeros(4, dtype=torch.bool))
    regions = RegionDataset([record], [torch.tensor([[450.0, 450.0, 500.0, 500.0]])], crop=crop,
                            fill=[v * 255 for v in p.mean], batch_size=4,
                            config=RegionSamplingConfig(mirror=False))
    assert len(regions) == 4 and regions.pos_per_group == 1
    crops, labels = collate_regions([regions[i] for i in range(4)])
    positives = labels > 0
    assert crops.dtype == torch.uint8 and int(positives.sum()) == 4
    view = TrainView(rc).eval()
    cap = Capture(view)
    RegionLoss(p.mean, p.std, channels_last=False)(view, (crops, labels), torch.device("cpu"))
    train = cap.all()[positives]                                   # slot order = BOXES order
    assert torch.equal(labels[positives], torch.tensor([1, 2, 1, 2]))

    infer = inference_inputs(Detector(Ensemble([rc]), DetectorConfig(), device="cpu"), image, boxes)
    assert infer.shape == (4, 3, crop.size, crop.size)
    assert_same_input(train, infer, p.std)
    # the check has teeth: the image content matters (not two constant tensors) ...
    assert float(infer.std()) > 0.5
    # ... and so does the fill: the edge box's crop reaches outside the image, where both show the mean (0)
    assert float(infer[1, :, -1, 0].abs().max()) < 0.01 and float(infer[1, :, 0, -1].abs().max()) > 0.01


def test_detect_train_wiring_gives_inference_inputs(astronaut: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``detect train`` as the CLI builds it (dataset fill, loss mean/std, crop) against the saved model
    loaded for ``detect run``: the engine's ``train`` is replaced by one that feeds a few groups through the
    command's own loss function and saves the model with the command's own ``save_final``."""
    import backbone.engine
    from detect.cli import main

    seen: dict[str, object] = {}

    def fake_train(model, dataset, loss_fn, config, out_dir, *, collate_fn, save_final, **_):
        picks = list(range(min(len(dataset), 6)))
        crops, labels = collate_fn([dataset[i] for i in picks])
        cap = Capture(model)
        model.eval()
        loss_fn(model, (crops, labels), torch.device("cpu"))
        seen["x"] = cap.all()
        seen["labels"] = labels
        # the box of each group's positive (slot 0 of every group of 1 + 3)
        seen["boxes"] = torch.stack([dataset.regions[int(dataset.positive_image[i])].boxes[int(dataset.positive_region[i])]
                                     for i in picks])
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_final(model, out / "model.pt")
        return backbone.engine.TrainResult(model, out, out / "last.pt", out / "model.pt", 1, 1, ())

    monkeypatch.setattr(backbone.engine, "train", fake_train)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": astronaut.name, "width": 512, "height": 512}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "flag"}],
        "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1 + k % 2, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                        for k, (x1, y1, x2, y2) in enumerate(BOXES)]}))
    code = main(["train", "--annotations", str(ann), "--images", str(astronaut.parent), "--proposals", "jitter",
                 "--weights", "none", "--crop-size", "96", "--padding", "12", "--batch-size", "8",
                 "--no-mirror", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert code == 0
    x, labels = seen["x"], seen["labels"]
    group = 4  # 8 regions at 25 % positives: groups of 1 positive + 3 background
    assert len(labels) == group * len(seen["boxes"]) and bool((labels[::group] > 0).all())
    train = x[::group]

    detector = load_detector([str(tmp_path / "run" / "model.pt")], DetectorConfig(), device="cpu")
    member = detector.classifier.members[0]
    assert member.crop == CropConfig(size=96, padding=12)
    infer = inference_inputs(detector, read_image(astronaut), seen["boxes"])
    assert_same_input(train, infer, member.preprocessing.std)
    assert float(infer.std()) > 0.5


def test_uint8_rounding_is_the_only_difference(astronaut: Path) -> None:
    """The bound above is not slack hiding something else: undoing the normalisation of the inference input
    and rounding it gives the training path's uint8 crop (up to ties at exactly .5 of a grey level)."""
    from detect.crops import normalize, warp_regions

    crop = CropConfig()
    rc = RegionClassifier.from_backbone(["person"], variant="paper", weights=None, crop=crop)
    p = rc.preprocessing
    image = read_image(astronaut)
    boxes = torch.tensor(BOXES)
    uint8 = warp_regions(image_to_tensor(image), boxes, fill=[v * 255 for v in p.mean], out_dtype=torch.uint8)
    infer = inference_inputs(Detector(Ensemble([rc]), DetectorConfig(), device="cpu"), image, boxes)
    mean = torch.tensor(p.mean).reshape(1, 3, 1, 1) * 255
    std = torch.tensor(p.std).reshape(1, 3, 1, 1) * 255
    back = infer * std + mean
    assert (back.round() - uint8.float()).abs().max() <= 1
    assert float((back.round() != uint8.float()).float().mean()) < 1e-3
    assert torch.allclose(normalize(uint8, p.mean, p.std), infer, atol=float(bound(p.std).max()), rtol=0)
