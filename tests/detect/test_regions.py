"""Training-region labels and batch composition on hand-made boxes and a tiny on-disk image set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect.crops import CropConfig, warp_regions
from detect.regions import (UNUSED, RegionDataset, RegionLoss, RegionSamplingConfig, TrainView, batch_groups,
                            collate_regions, jitter_proposals, label_regions)

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [50.0, 0.0, 60.0, 10.0]])
GT_LABELS = torch.tensor([3, 1, 2])


@dataclass(frozen=True)
class Rec:  # the fields of detect.datasets.ImageRecord that training reads
    file: Path
    width: int
    height: int
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore: torch.Tensor


def test_labels_follow_rcnn_rules():
    props = torch.tensor([
        [0.0, 0.0, 10.0, 12.0],    # IoU 0.83 with gt0 -> class 3
        [20.0, 20.0, 40.0, 30.0],  # IoU 0.5 with gt1 -> positive (>= 0.5), class 1
        [20.0, 20.0, 40.0, 29.0],  # IoU 0.45 -> background
        [70.0, 70.0, 80.0, 80.0],  # IoU 0 -> background
        [50.0, 0.0, 60.0, 9.0],    # IoU 0.9 with the IGNORED gt2 -> left out
        [5.0, 5.0, 5.5, 20.0],     # narrower than min_size 2 -> dropped
    ])
    ignore = torch.tensor([False, False, True])
    lab = label_regions(props, GT, GT_LABELS, ignore)
    # the two kept gt boxes come first (R-CNN trains on them as positives), then the 5 kept proposals
    assert lab.labels.tolist() == [3, 1, 3, 1, 0, 0, UNUSED]
    assert torch.allclose(lab.max_iou[:2], torch.ones(2))
    hard = label_regions(props, GT, GT_LABELS, ignore, config=RegionSamplingConfig(bg_iou_low=0.1, include_gt=False))
    assert hard.labels.tolist() == [3, 1, 0, UNUSED, UNUSED]  # IoU-0 background excluded from [0.1, 0.5)
    empty = label_regions(props, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64))
    assert (empty.labels == 0).all() and len(empty.labels) == 5


def test_batch_groups():
    assert batch_groups(128, 0.25) == (32, 1, 3)   # R-CNN: 32 positives + 96 background
    assert batch_groups(128, 0.5) == (64, 1, 1)
    assert batch_groups(100, 0.3) == (10, 3, 7)
    with pytest.raises(ValueError):
        batch_groups(4, 0.01)


@pytest.fixture()
def tiny_set(tmp_path):
    """Two 64x48 images on disk with boxes and hand-made proposals."""
    rng = np.random.default_rng(0)
    recs, props = [], []
    for i in range(2):
        img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        path = tmp_path / f"im{i}.png"
        cv2.imwrite(str(path), img[:, :, ::-1])
        boxes = torch.tensor([[4.0, 4.0, 24.0, 20.0], [30.0, 10.0, 60.0, 44.0]])
        recs.append(Rec(path, 64, 48, boxes, torch.tensor([1, 2]), torch.zeros(2, dtype=torch.bool)))
        props.append(torch.tensor([[4.0, 5.0, 24.0, 21.0], [0.0, 30.0, 20.0, 47.0], [40.0, 0.0, 63.0, 8.0],
                                   [10.0, 24.0, 30.0, 40.0], [31.0, 10.0, 60.0, 43.0]]))
    return recs, props


def test_dataset_groups_have_exact_ratio_and_true_labels(tiny_set):
    recs, props = tiny_set
    crop = CropConfig(size=32, padding=4)
    ds = RegionDataset(recs, props, crop=crop, fill=(124, 116, 104), batch_size=8,
                       config=RegionSamplingConfig(mirror=False))
    assert (ds.groups_per_batch, ds.pos_per_group, ds.bg_per_group) == (2, 1, 3)
    # per image: 2 gt + 2 matching proposals positive, 3 background
    assert ds.stats() == {"images": 2, "positives": 8, "background": 6, "near_background": 0, "groups": 8}
    torch.manual_seed(0)
    batch = collate_regions([ds[i] for i in range(len(ds))])
    crops, labels = batch
    assert crops.shape == (32, 3, 32, 32) and crops.dtype == torch.uint8
    assert (labels.view(8, 4)[:, 0] > 0).all() and (labels.view(8, 4)[:, 1:] == 0).all()
    # item 0 = the first positive of image 0 (its first gt box), cropped exactly as at test time
    from backbone.images import read_image
    from detect.crops import image_to_tensor

    ref = warp_regions(image_to_tensor(read_image(recs[0].file)), recs[0].boxes[:1], size=32, padding=4,
                       fill=(124, 116, 104), out_dtype=torch.uint8)
    assert torch.equal(ds[0][0][0], ref[0]) and ds[0][1][0] == 1


def test_mirroring_and_background_draw_follow_the_seed(tiny_set):
    recs, props = tiny_set
    ds = RegionDataset(recs, props, crop=CropConfig(size=32, padding=4), fill=(0, 0, 0), batch_size=8,
                       config=RegionSamplingConfig(background_from="any"))
    torch.manual_seed(5)
    a = ds[3]
    torch.manual_seed(5)
    b = ds[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        seen.add(ds[0][0].sum().item())
    assert len(seen) > 1  # different seeds draw different background / flips


def test_near_background_draws_parts_and_loose_boxes(tiny_set):
    """--near-background F: that share of the background comes from regions overlapping an object by IoU in
    [0.1, fg_iou) (here one loose box, IoU 0.40, among four far ones); F = 0 keeps R-CNN's uniform draw."""
    recs, _ = tiny_set
    near = torch.tensor([4.0, 4.0, 24.0, 10.4])  # the top 40 % of the first gt box: IoU 0.40
    far = torch.tensor([[0.0, 30.0, 20.0, 47.0], [40.0, 0.0, 63.0, 8.0], [10.0, 24.0, 30.0, 40.0],
                        [0.0, 0.0, 3.0, 47.0]])
    props = [torch.cat([near[None], far]) for _ in recs]

    def drawn_ious(fraction: float) -> torch.Tensor:
        ds = RegionDataset(recs, props, crop=CropConfig(size=32, padding=4), fill=(0, 0, 0), batch_size=8,
                           config=RegionSamplingConfig(near_background_fraction=fraction))
        assert ds.stats()["near_background"] == 2 and ds.stats()["background"] == 10
        torch.manual_seed(0)
        picks = [p for _ in range(200) for p in ds._draw_background(0)]
        return torch.stack([ds.regions[img].max_iou[r] for img, r in picks])

    always, never, half = drawn_ious(1.0), drawn_ious(0.0), drawn_ious(0.5)
    assert torch.allclose(always, torch.full_like(always, 0.4), atol=1e-4)
    assert 0.1 < (never >= 0.1).float().mean() < 0.3       # uniform: 1 region in 5
    assert 0.5 < (half >= 0.1).float().mean() < 0.7        # 0.5 + 0.5 x 1/5 = 0.6
    with pytest.raises(ValueError):
        RegionSamplingConfig(near_background_fraction=1.5)


def test_loss_and_jitter(tiny_set):
    from detect.classifier import RegionClassifier

    recs, _ = tiny_set
    props = jitter_proposals(recs[0], per_box=20, background=30)
    assert props.shape == (2 * 20 + 30, 4)
    assert (props[:, 0] >= 0).all() and (props[:, 2] <= 64).all() and (props[:, 3] <= 48).all()
    lab = label_regions(props, recs[0].boxes, recs[0].labels)
    assert (lab.labels > 0).sum() > 2 and (lab.labels == 0).sum() > 2
    rc = RegionClassifier.from_backbone(["a", "b"], variant="paper", weights=None, crop=CropConfig(32, 4))
    loss_fn = RegionLoss(rc.preprocessing.mean, rc.preprocessing.std)
    crops = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    loss, metrics = loss_fn(TrainView(rc).train(), (crops, torch.tensor([1, 0, 0, 2])), torch.device("cpu"))
    assert loss.ndim == 0 and loss.item() > 0 and 0 <= float(metrics["acc"]) <= 1
    loss.backward()
    assert rc.model.fc.weight.grad is not None
