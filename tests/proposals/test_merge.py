"""Merging selective search and MultiBox proposals: order, deduplication, fallback, method table."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest
import torch

from proposals.merge import DEDUPE_IOU, METHODS, ProposalMethod, merge_proposals, paper_proposals
from proposals.structures import Proposals


def props(boxes: list[list[float]], scores: list[float], source: int) -> Proposals:
    return Proposals(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                     torch.full((len(boxes),), source, dtype=torch.int64))


SS = props([[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 40, 40], [50, 50, 60, 60]], [-1, -2, -3, -4], 0)
MB = props([[20, 20, 40, 41], [70, 70, 90, 90]], [0.9, 0.5], 1)


class FakeMultiBox:
    def __init__(self, p: Proposals) -> None:
        self.p = p
        self.calls: list[int] = []

    def propose(self, image: np.ndarray, *, top_k: int) -> Proposals:
        self.calls.append(top_k)
        return self.p.select(torch.arange(min(top_k, len(self.p))))


def test_merge_puts_multibox_first_and_drops_ss_copies_of_multibox_boxes() -> None:
    for parts in ([SS, MB], [MB, SS]):
        out = merge_proposals(parts)
        assert out.sources.tolist() == [1, 1, 0, 0, 0]
        # the SS box [20,20,40,40] duplicates MultiBox's [20,20,40,41] (IoU 0.976) and goes; SS's own
        # near-duplicates ([0,0,10,10] and [0,0,10,11]) are both kept: one source is never deduplicated
        assert out.boxes.tolist() == [[20, 20, 40, 41], [70, 70, 90, 90], [0, 0, 10, 10], [0, 0, 10, 11],
                                      [50, 50, 60, 60]]
        assert out.scores.tolist() == pytest.approx([0.9, 0.5, -1, -2, -4])
    assert DEDUPE_IOU == 0.7


def test_merge_threshold_and_trivial_cases() -> None:
    assert len(merge_proposals([SS, MB], dedupe_iou=None)) == 6
    assert len(merge_proposals([SS, MB], dedupe_iou=0.99)) == 6  # IoU 0.976 is below 0.99
    assert len(merge_proposals([SS, MB], dedupe_iou=0.5)) == 5
    assert torch.equal(merge_proposals([SS]).boxes, SS.boxes)
    assert len(merge_proposals([])) == 0
    far = props([[100, 100, 120, 120]], [0.3], 1)
    assert len(merge_proposals([far, SS])) == 5


def test_paper_proposals_combines_ss_and_top_k_multibox(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_ss(image, *, ss_config=None, **_):
        seen["config"] = ss_config
        return SS

    monkeypatch.setattr("proposals.merge.ss_proposals", fake_ss)
    mb = FakeMultiBox(MB)
    out = paper_proposals(np.zeros((100, 100, 3), np.uint8), ss_config="cfg", multibox=mb, top_k=1)
    assert mb.calls == [1] and seen["config"] == "cfg"
    assert out.sources.tolist() == [1, 0, 0, 0]  # one MultiBox box, SS minus the copy of it


def test_paper_without_multibox_falls_back_to_ss_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("proposals.merge.ss_proposals", lambda image, **_: SS)
    import proposals.merge as merge

    merge._warn_no_multibox.cache_clear()
    with caplog.at_level(logging.WARNING, logger="proposals.merge"):
        out = paper_proposals(np.zeros((100, 100, 3), np.uint8), ss_config="cfg")
    assert torch.equal(out.boxes, SS.boxes) and torch.all(out.sources == 0)
    assert "no MultiBox model" in caplog.text


def test_methods_table_and_method_settings(tmp_path) -> None:
    assert set(METHODS) == {"ss", "multibox", "paper"}
    with pytest.raises(ValueError, match="unknown proposal method"):
        ProposalMethod("edgeboxes")
    with pytest.raises(ValueError, match="needs MultiBox weights"):
        ProposalMethod("multibox")
    with pytest.raises(ValueError, match="needs a MultiBox model"):
        METHODS["multibox"](np.zeros((8, 8, 3), np.uint8))


ss_module = pytest.importorskip("proposals.selective_search")


def test_real_selective_search_paper_method(rng: np.random.Generator) -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    image[10:40, 10:50] = (200, 30, 30)
    image[30:55, 45:75] = (20, 180, 40)
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    config = ss_module.SelectiveSearchConfig.rcnn("fast", min_size=5)
    ss = ProposalMethod("ss", ss_config=config)(image)
    paper = ProposalMethod("paper", ss_config=config)(image)
    assert len(ss) > 0 and len(paper) > 0 and torch.all(paper.sources == 0)
    assert paper.boxes[:, 2].max() <= 80 and paper.boxes[:, 3].max() <= 60
    # the default configs: superpixel scale 1 for "ss", 2 for "paper"; the hash tells them apart
    assert ProposalMethod("ss").resolved_ss_config().superpixel_scale == 1.0
    assert ProposalMethod("paper").resolved_ss_config().superpixel_scale == 2.0
    assert ProposalMethod("ss").config_hash() != ProposalMethod("paper").config_hash()


def test_cache_names_change_with_the_selective_search_algorithm(monkeypatch):
    """A proposal cache made by an earlier selective search (same config, other boxes: issue 11's Felzenszwalb
    fix) is not reused: the algorithm version is part of the hash that names the cache folder."""
    ss_module = importlib.import_module("proposals.selective_search")
    method = ProposalMethod("paper")
    before = method.config_hash()
    assert method.describe()["ss_algorithm"] == ss_module.ALGORITHM_VERSION
    monkeypatch.setattr(ss_module, "ALGORITHM_VERSION", ss_module.ALGORITHM_VERSION + 1)
    assert method.config_hash() != before
