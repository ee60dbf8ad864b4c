"""proposals.metrics on hand-made cases whose numbers are worked out in the comments."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from proposals.metrics import average_recall, best_overlaps, proposal_recall


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_perfect_proposal_gives_recall_and_abo_one() -> None:
    gt = t([[10, 10, 50, 40], [0, 0, 5, 5]])
    stats = proposal_recall([gt.clone()], [gt])
    assert stats.recall_50 == 1.0 and stats.recall_70 == 1.0
    assert stats.abo == pytest.approx(1.0) and stats.mabo == pytest.approx(1.0)
    assert stats.ar_100 == pytest.approx(1.0) and stats.ar_1000 == pytest.approx(1.0)
    assert stats.boxes_per_image == 2 and stats.num_gt == 2 and stats.num_images == 1


def test_half_overlap() -> None:
    # proposal covers the top half of the gt box: IoU = 50 / 100 = 0.5
    stats = proposal_recall([t([[0, 0, 10, 5]])], [t([[0, 0, 10, 10]])])
    assert stats.recall_50 == 1.0
    assert stats.recall_70 == 0.0
    assert stats.abo == pytest.approx(0.5)
    assert stats.ar_100 == pytest.approx(0.1)  # only the 0.50 threshold of ten is met


def test_average_recall_by_hand() -> None:
    # IoU 0.75 passes 0.50, 0.55, ..., 0.75: 6 of 10 thresholds; IoU 0.96 passes all; IoU 0.3 none
    assert average_recall(torch.tensor([0.75])) == pytest.approx(0.6)
    assert average_recall(torch.tensor([0.75, 0.96, 0.3])) == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    assert math.isnan(average_recall(torch.zeros(0)))


def test_top_k_uses_only_top_ranked_proposals() -> None:
    gt = t([[0, 0, 10, 10]])
    far = t([[100, 100, 110, 110]] * 150)
    props = torch.cat([far, gt])  # the perfect box is ranked 151st
    stats = proposal_recall([props], [gt])
    assert stats.ar_100 == 0.0
    assert stats.ar_1000 == pytest.approx(1.0)
    assert stats.recall_50 == 1.0
    assert best_overlaps(props, gt, top_k=100).tolist() == [0.0]


def test_mabo_averages_classes_not_boxes() -> None:
    gt = t([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    labels = torch.tensor([1, 1, 2])
    props = t([[0, 0, 10, 10], [40, 40, 50, 50]])  # class 1: IoU 1 and 0; class 2: IoU 1
    stats = proposal_recall([props], [gt], [labels])
    assert stats.abo == pytest.approx(2 / 3)
    assert stats.mabo == pytest.approx((0.5 + 1.0) / 2)
    assert proposal_recall([props], [gt]).mabo == pytest.approx(2 / 3)  # no labels: MABO = ABO


def test_pools_ground_truth_over_images_and_handles_empties() -> None:
    gt = [t([[0, 0, 10, 10]]), t([[0, 0, 10, 10], [20, 0, 30, 10]]), t([])]
    props = [t([]), t([[0, 0, 10, 10]]), t([[1, 1, 2, 2]] * 3)]
    stats = proposal_recall(props, gt)
    assert stats.num_gt == 3
    assert stats.recall_50 == pytest.approx(1 / 3)  # only the second image's first box is found
    assert stats.boxes_per_image == pytest.approx(4 / 3)


def test_no_ground_truth_gives_nan() -> None:
    stats = proposal_recall([t([[0, 0, 1, 1]])], [t([])])
    assert math.isnan(stats.recall_50) and math.isnan(stats.abo) and stats.num_gt == 0
    assert stats.boxes_per_image == 1


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="proposal sets"):
        proposal_recall([t([])], [t([]), t([])])


boxes_st = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 30)),
                    min_size=1, max_size=12).map(lambda r: t([[x, y, x + w, y + h] for x, y, w, h in r]))


@settings(max_examples=30, deadline=None)
@given(props=boxes_st, gt=boxes_st)
def test_metric_orderings_hold(props: torch.Tensor, gt: torch.Tensor) -> None:
    s = proposal_recall([props], [gt])
    assert 0.0 <= s.recall_70 <= s.recall_50 <= 1.0
    assert s.ar_100 <= s.ar_1000 + 1e-9
    assert 0.0 <= s.abo <= 1.0 + 1e-6
    # adding the ground truth itself as proposals makes everything perfect
    perfect = proposal_recall([torch.cat([gt, props])], [gt])
    assert perfect.recall_70 == 1.0 and perfect.abo == pytest.approx(1.0)
