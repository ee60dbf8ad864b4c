"""MultiBox: priors, bipartite matching, loss, gradients and inference, on hand-made cases.

A tiny stand-in trunk (one strided conv with ``forward_features`` / ``num_features``) keeps these fast;
the real GoogLeNet trunk is exercised by the slow training test in ``tests/detect/test_multibox_cli.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from proposals.multibox import MULTIBOX_SOURCE, MultiBox, MultiBoxConfig, MultiBoxOutput, kmeans_priors
from proposals.multibox_train import match, multibox_loss


class TinyTrunk(nn.Module):
    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, self.num_features, kernel_size=32, stride=32)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def tiny_model(priors: torch.Tensor, **kw) -> MultiBox:
    cfg = MultiBoxConfig(num_priors=priors.shape[0], input_size=64, head_channels=4, head_grid=2, dropout=0.0, **kw)
    return MultiBox(TinyTrunk(), priors, cfg)


PRIORS = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0], [0.25, 0.25, 0.75, 0.75]])


def test_kmeans_priors_finds_the_clusters(rng: np.random.Generator) -> None:
    centres = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]])
    boxes = centres.repeat(50, 1) + torch.from_numpy(rng.normal(0, 0.01, (150, 4))).float()
    priors = kmeans_priors(boxes, 3, seed=0)
    assert priors.shape == (3, 4)
    # every true centre has a prior within 0.02 (sorted by area: the whole-image box comes first)
    assert torch.cdist(centres, priors).min(dim=1).values.max() < 0.02
    assert torch.allclose(priors[0], centres[2], atol=0.02)


def test_kmeans_priors_caps_k_at_distinct_boxes() -> None:
    boxes = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.9, 0.9]])
    assert kmeans_priors(boxes, 800).shape == (2, 4)


def test_match_picks_the_obvious_assignment() -> None:
    gt = torch.tensor([[0.26, 0.24, 0.74, 0.76], [0.01, 0.0, 0.49, 0.5]])  # ~prior 3, ~prior 0
    bi, gi = match(PRIORS, gt)
    assert sorted(zip(bi.tolist(), gi.tolist())) == [(0, 1), (3, 0)]


def test_match_is_one_to_one_when_greedy_would_not_be() -> None:
    # both gt boxes are closest to box 0; greedy would give box 0 twice, Hungarian gives 0 and 1
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.7, 0.7]])
    gt = torch.tensor([[0.0, 0.0, 0.45, 0.45], [0.0, 0.0, 0.55, 0.55]])
    bi, gi = match(boxes, gt)
    assert sorted(bi.tolist()) == [0, 1] and sorted(gi.tolist()) == [0, 1]
    # minimum total cost: 0.45 -> box 0, 0.55 -> box 1 (0.05^2 * 2 + 0.15^2 * 2 < the other way)
    assert dict(zip(gi.tolist(), bi.tolist())) == {0: 0, 1: 1}


def test_match_empty() -> None:
    bi, gi = match(PRIORS, torch.zeros(0, 4))
    assert bi.numel() == 0 and gi.numel() == 0


def _output(boxes: torch.Tensor, logits: torch.Tensor) -> MultiBoxOutput:
    return MultiBoxOutput(boxes=boxes.unsqueeze(0), logits=logits.unsqueeze(0))


def test_loss_near_zero_when_predictions_equal_targets_and_positive_otherwise() -> None:
    gt = PRIORS[[3, 0]].clone()
    perfect = _output(PRIORS.clone(), torch.tensor([20.0, -20.0, -20.0, 20.0]))
    loss, metrics = multibox_loss(perfect, [gt], PRIORS)
    assert loss.item() < 1e-6 and metrics["matched"] == 2
    off = _output(PRIORS + 0.1, torch.tensor([20.0, -20.0, -20.0, 20.0]))
    loss_off, m_off = multibox_loss(off, [gt], PRIORS)
    assert m_off["loc"] == pytest.approx(0.5 * 4 * 0.01, rel=1e-4)  # per matched box: 1/2 * 4 coords * 0.1^2
    assert loss_off.item() == pytest.approx(0.3 * m_off["loc"] + m_off["conf"], rel=1e-5)
    wrong_conf = _output(PRIORS.clone(), torch.tensor([-20.0, 20.0, 20.0, -20.0]))
    assert multibox_loss(wrong_conf, [gt], PRIORS)[0].item() == pytest.approx(4 * 20 / 2, rel=1e-3)


def test_loss_with_no_ground_truth_pushes_all_confidences_down() -> None:
    out = _output(PRIORS.clone(), torch.zeros(4))
    loss, metrics = multibox_loss(out, [torch.zeros(0, 4)], PRIORS)
    assert metrics["loc"] == 0 and loss.item() == pytest.approx(4 * np.log(2), rel=1e-5)


def test_match_on_predictions_uses_predicted_boxes() -> None:
    gt = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    # prediction 0 has moved onto the gt box; prior 1 is the gt box itself
    preds = PRIORS.clone()
    preds[0] = gt[0]
    preds[1] = torch.tensor([0.0, 0.0, 0.1, 0.1])
    out = _output(preds, torch.zeros(4))
    assert multibox_loss(out, [gt], PRIORS, match_on="predictions")[1]["loc"] == pytest.approx(0.0, abs=1e-9)
    assert multibox_loss(out, [gt], PRIORS, match_on="priors")[1]["loc"] > 0.1


def test_gradients_flow_to_head_and_trunk() -> None:
    model = tiny_model(PRIORS)
    images = torch.randn(2, 3, 64, 64)
    out = model(images)
    assert out.boxes.shape == (2, 4, 4) and out.logits.shape == (2, 4)
    loss, _ = multibox_loss(out, [PRIORS[:1] + 0.05, torch.zeros(0, 4)], model.priors)
    loss.backward()
    assert model.head.fc.weight.grad.abs().sum() > 0
    assert model.trunk.conv.weight.grad.abs().sum() > 0
    assert model.priors.grad is None  # priors are a buffer, not trained


def test_initial_predictions_are_the_priors_with_low_confidence() -> None:
    model = tiny_model(PRIORS).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert torch.allclose(out.boxes[0], PRIORS, atol=0.05)
    assert torch.sigmoid(out.logits).max() < 0.05


def test_propose_returns_clipped_pixel_boxes_sorted_by_confidence(rng: np.random.Generator) -> None:
    model = tiny_model(PRIORS)
    with torch.no_grad():  # make predictions spill outside the image and give distinct confidences
        model.head.fc.bias.view(4, 5)[:, :4] = torch.tensor([-0.2, -0.2, 0.0, 0.0])
        model.head.fc.bias.view(4, 5)[:, 4] = torch.tensor([0.0, 3.0, 1.0, 2.0])
    image = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    props = model.propose(image, top_k=3)
    assert len(props) == 3 and props.boxes.dtype == torch.float32
    assert torch.all(props.sources == MULTIBOX_SOURCE)
    assert torch.all(props.scores[:-1] >= props.scores[1:])
    assert props.boxes[:, [0, 2]].min() >= 0 and props.boxes[:, [0, 2]].max() <= 50
    assert props.boxes[:, [1, 3]].min() >= 0 and props.boxes[:, [1, 3]].max() <= 30
    assert torch.all(props.boxes[:, 2] >= props.boxes[:, 0]) and torch.all(props.boxes[:, 3] >= props.boxes[:, 1])
    # most confident: prior 1 (0.5..1.0) shifted by -0.2 in x1/y1 -> (0.3, 0.3, 1, 1) of a 50 x 30 image
    assert torch.allclose(props.boxes[0], torch.tensor([15.0, 9.0, 50.0, 30.0]), atol=0.5)


def test_propose_batch_matches_single_and_accepts_tensors(rng: np.random.Generator) -> None:
    model = tiny_model(PRIORS)
    a = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)
    batch = model.propose_batch([a, torch.from_numpy(b).permute(2, 0, 1)])
    single = model.propose(a)
    assert torch.allclose(batch[0].boxes, single.boxes, atol=1e-4)
    assert batch[1].boxes[:, [0, 2]].max() <= 32 and batch[1].boxes[:, [1, 3]].max() <= 64
    assert model.training  # propose does not leave the model in eval mode


def test_save_and_load_round_trip_on_the_real_trunk(tmp_path, rng: np.random.Generator) -> None:
    from proposals.multibox import build_multibox, save_multibox

    model = build_multibox(PRIORS, MultiBoxConfig(num_priors=4, input_size=64, top_k=3)).eval()
    path = tmp_path / "mb.pt"
    save_multibox(path, model, config={"note": "test"})
    entry = torch.load(path, weights_only=True)
    assert entry["multibox"]["input_size"] == 64 and torch.equal(entry["priors"], PRIORS)
    loaded = MultiBox.from_checkpoint(path)
    assert loaded.config == model.config and loaded.preprocessing == model.preprocessing
    image = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    a, b = model.propose(image), loaded.propose(image)
    assert len(a) == 3 and torch.allclose(a.boxes, b.boxes) and torch.allclose(a.scores, b.scores)


def test_load_refuses_a_classifier_checkpoint(tmp_path) -> None:
    from backbone import Preprocessing, googlenet, save_checkpoint
    from backbone.errors import InputError
    from proposals.multibox import load_multibox

    clf = googlenet(variant="paper", num_classes=2, aux_logits=False)
    save_checkpoint(tmp_path / "clf.pt", clf, class_names=["a", "b"], preprocessing=Preprocessing(), config={})
    with pytest.raises(InputError, match="not a MultiBox checkpoint"):
        load_multibox(tmp_path / "clf.pt")
    with pytest.raises(InputError, match="no such file"):
        load_multibox(tmp_path / "missing.pt")


def test_dataset_normalises_boxes_drops_ignored_and_flips(tmp_path) -> None:
    import cv2
    from dataclasses import dataclass as dc

    from backbone.preprocess import Preprocessing
    from proposals.multibox_train import MultiBoxDataset, collate_multibox, priors_from_records

    @dc(frozen=True)
    class Rec:  # the fields of detect.datasets.ImageRecord that MultiBox reads
        file: str
        width: int
        height: int
        boxes: torch.Tensor
        ignore: torch.Tensor

    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :50] = 255  # left half white
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rec = Rec(str(tmp_path / "a.png"), 100, 50, torch.tensor([[0.0, 0, 50, 50], [10, 10, 20, 20]]),
              torch.tensor([False, True]))
    ds = MultiBoxDataset([rec], input_size=32, preprocessing=Preprocessing(), flip=False)
    image, boxes = ds[0]
    assert image.shape == (3, 32, 32) and boxes.tolist() == [[0.0, 0.0, 0.5, 1.0]]
    assert image[:, :, :10].mean() > image[:, :, -10:].mean()
    flipped = MultiBoxDataset([rec], input_size=32, preprocessing=Preprocessing(), flip=True)
    outs = {tuple(flipped[0][1][0].tolist()) for _ in range(20)}
    assert outs == {(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)}
    images, gts = collate_multibox([ds[0], ds[0]])
    assert images.shape == (2, 3, 32, 32) and len(gts) == 2
    assert priors_from_records([rec], 5).tolist() == [[0.0, 0.0, 0.5, 1.0]]


def test_build_from_a_backbone_checkpoint_keeps_the_trunk_weights(tmp_path) -> None:
    from backbone import Preprocessing, googlenet, save_checkpoint
    from proposals.multibox import build_multibox

    clf = googlenet(variant="paper", num_classes=3, aux_logits=True)
    save_checkpoint(tmp_path / "clf.pt", clf, class_names=["a", "b", "c"], preprocessing=Preprocessing(), config={})
    model = build_multibox(PRIORS, MultiBoxConfig(num_priors=800, input_size=64), weights=tmp_path / "clf.pt")
    assert model.config.num_priors == 4  # K comes from the priors
    assert torch.equal(model.trunk.conv1.conv.weight, clf.conv1.conv.weight)
    assert model.trunk.aux1 is None and isinstance(model.trunk.fc, nn.Identity)


def test_a_photo_as_array_or_tensor_gives_the_same_proposals() -> None:
    """One resize rule for every input kind (issue 15: arrays were area-resized, tensors bilinearly): the
    astronaut photo (512 px, shrunk to the 64 px input) as an HWC uint8 array, a CHW uint8 tensor and a CHW
    float tensor in [0, 1] gives the same boxes and scores."""
    import skimage.data

    torch.manual_seed(0)
    model = tiny_model(PRIORS).eval()
    photo = skimage.data.astronaut()
    as_uint8 = torch.from_numpy(photo).permute(2, 0, 1)
    array, tensor, floats = (model.propose(x, top_k=4) for x in (photo, as_uint8, as_uint8.float() / 255))
    assert torch.equal(tensor.boxes, array.boxes) and torch.equal(tensor.scores, array.scores)
    # the float input skips the uint8 rounding of the resized pixels: ~0.01 px apart on a 512 px photo
    assert torch.allclose(floats.boxes, array.boxes, atol=0.05) and torch.allclose(floats.scores, array.scores, atol=1e-4)
