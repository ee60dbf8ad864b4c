"""ILSVRC DET evaluation (devkit rule) on hand-made cases, and the devkit submission format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from backbone.errors import InputError
from detect.datasets import DetectionDataset, ImageRecord
from detect.evaluation import (evaluate_coco, evaluate_ilsvrc, load_ilsvrc_submission, read_blacklist,
                               to_ilsvrc_submission)
from detect.evaluation.ilsvrc import devkit_iou, devkit_threshold, voc_ap
from detect.structures import Detections

CLASSES = ["cat", "dog", "yak"]


def record(image_id: str, boxes: list[list[float]], labels: list[int], ignore: list[bool] | None = None) -> ImageRecord:
    n = len(boxes)
    return ImageRecord(image_id, Path(f"/nowhere/{image_id}.JPEG"), 200, 200,
                       torch.tensor(boxes, dtype=torch.float32).reshape(n, 4), torch.tensor(labels, dtype=torch.int64),
                       torch.tensor(ignore or [False] * n, dtype=torch.bool))


def dataset(*records: ImageRecord, index: dict | None = None) -> DetectionDataset:
    return DetectionDataset(list(records), CLASSES, ["n00000001", "n00000002", "n00000003"], "ilsvrc",
                            Path("/nowhere"), image_index=index or {})


def dets(boxes: list[list[float]], scores: list[float], labels: list[int]) -> Detections:
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                      torch.tensor(labels, dtype=torch.int64))


def test_perfect_set_is_one_and_class_without_gt_is_left_out() -> None:
    a = record("a", [[10, 10, 60, 80], [100, 100, 150, 190]], [1, 2])
    b = record("b", [[0, 0, 199, 199]], [1])
    ds = dataset(a, b)
    m = evaluate_ilsvrc(ds, {"a": dets(a.boxes.tolist(), [0.9, 0.8], [1, 2]), "b": dets(b.boxes.tolist(), [0.7], [1])})
    assert m.per_class_AP == {"cat": 1.0, "dog": 1.0, "yak": -1.0} and m.mAP == 1.0
    assert m.num_ground_truth == {"cat": 2, "dog": 1, "yak": 0}
    # a detection of the class without ground truth changes nothing for the others
    extra = evaluate_ilsvrc(ds, {"a": dets(a.boxes.tolist() + [[0, 0, 5, 5]], [0.9, 0.8, 0.95], [1, 2, 3]),
                                 "b": dets(b.boxes.tolist(), [0.7], [1])})
    assert extra.per_class_AP == m.per_class_AP and extra.mAP == 1.0
    assert evaluate_ilsvrc(ds, {}).per_class_AP == {"cat": 0.0, "dog": 0.0, "yak": -1.0}


def test_small_objects_get_a_lower_threshold() -> None:
    # devkit sizes: a 10x10 box -> threshold 100 / 400 = 0.25; a 100x100 box -> 0.5
    small = [[20.0, 20, 30, 30]]
    big = [[50.0, 50, 150, 150]]
    g = np.array([[21.0, 21, 30, 30], [51, 51, 150, 150]])  # the same boxes in 1-based inclusive coordinates
    assert devkit_threshold(g) == pytest.approx([0.25, 0.5])
    shifted_small = [[24.0, 20, 34, 30]]       # IoU 6/14 = 0.43: passes 0.25, would fail 0.5
    shifted_big = [[90.0, 50, 190, 150]]       # IoU 60/140 = 0.43: fails 0.5
    assert float(box_iou(torch.tensor(shifted_small), torch.tensor(small))) == pytest.approx(6 / 14)
    ds = dataset(record("s", small, [1]), record("b", big, [2]))
    m = evaluate_ilsvrc(ds, {"s": dets(shifted_small, [0.9], [1]), "b": dets(shifted_big, [0.9], [2])})
    assert m.per_class_AP["cat"] == 1.0 and m.per_class_AP["dog"] == 0.0


def test_duplicates_are_false_positives() -> None:
    ds = dataset(record("a", [[0, 0, 50, 50], [100, 100, 150, 150]], [1, 1]))
    # 0.9 on the first box (TP), 0.8 again on it (duplicate: FP), 0.7 on the second (TP)
    d = dets([[0, 0, 50, 50], [1, 1, 50, 50], [100, 100, 150, 150]], [0.9, 0.8, 0.7], [1, 1, 1])
    m = evaluate_ilsvrc(ds, {"a": d})
    # recall .5 .5 1, precision 1 .5 2/3 -> envelope 1, 2/3, 2/3 -> AP = .5 * 1 + .5 * 2/3
    assert m.per_class_AP["cat"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    rec, prec = m.curves["cat"]
    assert rec.tolist() == [0.5, 0.5, 1.0] and prec == pytest.approx([1, 0.5, 2 / 3])


def test_detection_takes_best_unmatched_ground_truth_and_wrong_class_is_fp() -> None:
    gts = [[0, 0, 100, 100], [10, 0, 110, 100]]
    ds = dataset(record("a", gts, [1, 1]))
    # first (highest score) takes the gt it overlaps most (the second); the next one the remaining gt
    d = dets([[10, 0, 110, 100], [5, 0, 105, 100], [0, 0, 100, 100]], [0.9, 0.8, 0.7], [1, 1, 2])
    m = evaluate_ilsvrc(ds, {"a": d})
    assert m.per_class_AP["cat"] == 1.0 and m.per_class_AP["dog"] == -1.0


def test_greedy_match_takes_the_best_overlap_not_the_first_eligible_box() -> None:
    """Worked on paper (100 x 100 boxes: devkit threshold min(0.5, 10000/12100) = 0.5; with the +1 rule the
    devkit's IoU of converted boxes equals the plain one):

    ground truth A = [0, 0, 100, 100] (listed first), B = [40, 0, 140, 100];
    d1 = [30, 0, 130, 100] score 0.9: IoU(d1, A) = 7000/13000 = 0.54, IoU(d1, B) = 9000/11000 = 0.82;
    d2 = [50, 0, 150, 100] score 0.8: IoU(d2, A) = 5000/15000 = 0.33, IoU(d2, B) = 0.82.
    The devkit's rule: d1 takes B (its best), d2 finds only B, already taken: a false positive.
    tp = [1, 0], fp = [0, 1], 2 positives: recall [.5, .5], precision [1, .5] -> AP = 0.5 x 1 = 0.5.
    (Taking the first eligible box instead gives d1 -> A, d2 -> B and AP 1.0.)
    """
    ds = dataset(record("a", [[0, 0, 100, 100], [40, 0, 140, 100]], [1, 1]))
    d = dets([[30, 0, 130, 100], [50, 0, 150, 100]], [0.9, 0.8], [1, 1])
    m = evaluate_ilsvrc(ds, {"a": d})
    assert m.per_class_AP["cat"] == pytest.approx(0.5)
    rec, prec = m.curves["cat"]
    assert rec.tolist() == [0.5, 0.5] and prec.tolist() == [1.0, 0.5]
    # the same boxes with the ground truth listed the other way round: nothing changes
    swapped = dataset(record("a", [[40, 0, 140, 100], [0, 0, 100, 100]], [1, 1]))
    assert evaluate_ilsvrc(swapped, {"a": d}).per_class_AP["cat"] == pytest.approx(0.5)


def test_ignored_ground_truth_counts_neither_way() -> None:
    ds = dataset(record("a", [[0, 0, 50, 50], [100, 100, 150, 150]], [1, 1], ignore=[False, True]))
    d = dets([[100, 100, 150, 150], [0, 0, 50, 50]], [0.9, 0.8], [1, 1])
    m = evaluate_ilsvrc(ds, {"a": d})
    assert m.per_class_AP["cat"] == 1.0 and m.num_ground_truth["cat"] == 1


def test_ranking_across_images() -> None:
    ds = dataset(record("a", [[0, 0, 50, 50]], [1]), record("b", [[0, 0, 50, 50]], [1]))
    # a: FP at 0.95; b: TP at 0.9; a: TP at 0.5  -> recall 0 .5 1, precision 0 .5 2/3
    m = evaluate_ilsvrc(ds, {"a": dets([[120, 120, 180, 180], [0, 0, 50, 50]], [0.95, 0.5], [1, 1]),
                             "b": dets([[0, 0, 50, 50]], [0.9], [1])})
    assert m.per_class_AP["cat"] == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    with pytest.raises(ValueError, match="not in"):
        evaluate_ilsvrc(ds, {"zzz": dets([], [], [])})


def test_devkit_iou_on_converted_boxes_equals_plain_iou(rng: np.random.Generator) -> None:
    xy = rng.uniform(0, 100, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 60, (40, 2))], axis=1)
    devkit = boxes + [1, 1, 0, 0]  # what evaluate_ilsvrc feeds the devkit formula
    ours = box_iou(torch.tensor(boxes), torch.tensor(boxes)).numpy()
    assert np.allclose(devkit_iou(devkit, devkit), ours, atol=1e-12)


def test_voc_ap_all_points() -> None:
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    assert voc_ap(np.array([0.25, 0.5]), np.array([0.5, 1.0])) == 0.5  # envelope lifts the first step
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_submission_format() -> None:
    ds = dataset(record("a", [], []), record("b", [], []), index={"a": 7, "b": 3})
    text = to_ilsvrc_submission({"a": dets([[0, 0, 50.4, 20.6], [9.6, 10, 12, 13]], [0.5, 0.75], [2, 1]),
                                 "b": dets([[0.2, 0.4, 0.4, 0.6]], [0.1], [3])}, ds)
    assert text.splitlines() == ["3 3 0.1 1 1 1 1",         # sub-pixel box stays 1 px wide
                                 "7 1 0.75 11 11 12 13",    # sorted by confidence, 1-based inclusive
                                 "7 2 0.5 1 1 50 21"]
    no_index = dataset(record("a", [], []), record("b", [], []))
    assert to_ilsvrc_submission({"b": dets([[0, 0, 5, 5]], [1.0], [1])}, no_index) == "2 1 1 1 1 5 5\n"


def devkit_vocap(rec: np.ndarray, prec: np.ndarray) -> float:
    """``VOCap.m`` transcribed loop by loop (not the evaluator's ``voc_ap``)."""
    mrec = [0.0, *rec.tolist(), 1.0]
    mpre = [0.0, *prec.tolist(), 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return float(sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))


def devkit_reference(gt: list[tuple[np.ndarray, np.ndarray]], det: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     n_classes: int) -> list[float]:
    """A literal transcription of the devkit's loops (1-based inclusive boxes, scalar arithmetic); it uses
    nothing of the evaluator (its own IoU, threshold, greedy matching and ``VOCap``)."""
    tp_all, fp_all, sc_all, lb_all, npos = [], [], [], [], np.zeros(n_classes + 1)
    for (gb, gl), (db, ds, dl) in zip(gt, det):
        for lab in gl:
            npos[lab] += 1
        thr = [min(0.5, ((b[2] - b[0] + 1) * (b[3] - b[1] + 1)) / ((b[2] - b[0] + 11) * (b[3] - b[1] + 11)))
               for b in gb]
        detected = [False] * len(gb)
        for j in np.argsort(-ds, kind="stable"):
            bb, ovmax, kmax = db[j], -np.inf, -1
            for k, bbgt in enumerate(gb):
                if gl[k] != dl[j] or detected[k]:
                    continue
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) \
                        - iw * ih
                    ov = iw * ih / ua
                    if ov >= thr[k] and ov > ovmax:
                        ovmax, kmax = ov, k
            if kmax >= 0:
                detected[kmax] = True
            tp_all.append(float(kmax >= 0))
            fp_all.append(float(kmax < 0))
            sc_all.append(ds[j])
            lb_all.append(dl[j])
    order = np.argsort(-np.array(sc_all), kind="stable")
    tp_all, fp_all, lb_all = np.array(tp_all)[order], np.array(fp_all)[order], np.array(lb_all)[order]
    aps = []
    for c in range(1, n_classes + 1):
        if npos[c] == 0:
            aps.append(-1.0)
            continue
        tp, fp = np.cumsum(tp_all[lb_all == c]), np.cumsum(fp_all[lb_all == c])
        aps.append(devkit_vocap(tp / npos[c], tp / np.maximum(tp + fp, np.finfo(float).eps)))
    return aps


def test_matches_a_literal_devkit_transcription(rng: np.random.Generator) -> None:
    """Random images with clustered boxes of all sizes; ground truth in 1-based integer XML coordinates."""
    records, dets_by_image, gt, det = [], {}, [], []
    for i in range(12):
        n = int(rng.integers(0, 6))
        xy = rng.integers(1, 150, (n, 2))
        gb = np.concatenate([xy, xy + rng.integers(2, 60, (n, 2))], axis=1).astype(float)  # xmin ymin xmax ymax
        gl = rng.integers(1, 4, n)
        m = int(rng.integers(0, 15))
        src = gb[rng.integers(0, max(n, 1), m)] if n else np.tile([[10.0, 10, 40, 40]], (m, 1))
        db = src + rng.normal(0, 4, (m, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dl = np.where(rng.random(m) < 0.8, gl[rng.integers(0, max(n, 1), m)] if n else 1, rng.integers(1, 4, m))
        ds = rng.random(m)
        gt.append((gb, gl))
        det.append((db, ds, dl))
        ours = gb - [1, 1, 0, 0]  # what read_voc_xml makes of the XML coordinates
        records.append(record(f"i{i}", ours.tolist(), gl.tolist()))
        dets_by_image[f"i{i}"] = dets((db - [1, 1, 0, 0]).tolist(), ds.tolist(), dl.tolist())
    m = evaluate_ilsvrc(dataset(*records), dets_by_image)
    reference = devkit_reference(gt, det, 3)
    assert list(m.per_class_AP.values()) == pytest.approx(reference, abs=1e-6)
    assert any(0 < ap < 1 for ap in reference)


def test_crowded_images_match_the_devkit_transcription(rng: np.random.Generator) -> None:
    """Rows of overlapping same-class boxes (shifted by 15-40 px) and jittered detections: here the first
    eligible ground truth is often not the best-overlapping one, so only the devkit's choice agrees."""
    records, dets_by_image, gt, det = [], {}, [], []
    for i in range(10):
        n = int(rng.integers(2, 6))
        x0 = np.cumsum(rng.integers(15, 40, n)).astype(float)
        gb = np.stack([x0, np.full(n, 11.0), x0 + rng.integers(50, 80, n), np.full(n, 90.0)], axis=1)
        gb = gb[rng.permutation(n)]  # listing order unrelated to position
        gl = np.ones(n, dtype=np.int64)
        m = int(rng.integers(n, 2 * n + 2))
        db = gb[rng.integers(0, n, m)] + rng.normal(0, 12, (m, 4)) * [1, 0.2, 1, 0.2]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 5)
        ds = rng.random(m)
        dl = np.ones(m, dtype=np.int64)
        gt.append((gb, gl))
        det.append((db, ds, dl))
        records.append(record(f"i{i}", (gb - [1, 1, 0, 0]).tolist(), gl.tolist()))
        dets_by_image[f"i{i}"] = dets((db - [1, 1, 0, 0]).tolist(), ds.tolist(), dl.tolist())
    m = evaluate_ilsvrc(dataset(*records), dets_by_image)
    reference = devkit_reference(gt, det, 3)
    assert list(m.per_class_AP.values()) == pytest.approx(reference, abs=1e-9)
    assert 0.2 < reference[0] < 0.95 and reference[1:] == [-1.0, -1.0]


def test_evaluation_of_some_images_counts_the_others_as_missed() -> None:
    """(Moved from the removed DetectionEvaluator: evaluate_ilsvrc / evaluate_coco take {image_id: Detections}
    of the images processed so far; the assertions are the same.)"""
    a = record("a", [[0, 0, 50, 50]], [1])
    b = record("b", [[0, 0, 50, 50]], [2])
    processed = {"a": dets([[0, 0, 50, 50]], [0.9], [1])}
    assert evaluate_ilsvrc(dataset(a, b), processed).per_class_AP == {"cat": 1.0, "dog": 0.0, "yak": -1.0}  # b: a miss
    processed["b"] = dets([[0, 0, 50, 50]], [0.9], [2])
    assert evaluate_ilsvrc(dataset(a, b), processed).mAP == 1.0
    assert evaluate_ilsvrc(dataset(a, b), {}).mAP == 0.0
    with pytest.raises(ValueError, match="not in"):
        evaluate_ilsvrc(dataset(a, b), {"zzz": dets([], [], [])})
    coco = evaluate_coco(dataset(a, b), {"a": dets([[0, 0, 50, 50]], [0.9], [1])})
    assert coco.per_class_AP["cat"] == pytest.approx(1.0)


def test_blacklist_skips_a_class_in_an_image(tmp_path: Path) -> None:
    a = record("a", [[0, 0, 50, 50], [60, 60, 90, 90]], [1, 2])
    b = record("b", [[0, 0, 50, 50]], [1])
    ds = dataset(a, b, index={"a": 1, "b": 2})
    # cat in b is missed and a dog is hallucinated there; blacklisting (b, cat) forgives the miss only
    d = {"a": dets([[0, 0, 50, 50], [60, 60, 90, 90]], [0.9, 0.8], [1, 2]),
         "b": dets([[100, 100, 150, 150]], [0.95], [2])}
    assert evaluate_ilsvrc(ds, d).per_class_AP["cat"] == 0.5
    path = tmp_path / "blacklist.txt"
    path.write_text("2 n00000001\n7 n00000002\n")  # index 7: not in this subset, skipped
    pairs = read_blacklist(path, ds)
    assert pairs == {("b", 1)}
    m = evaluate_ilsvrc(ds, d, blacklist=pairs)
    assert m.per_class_AP["cat"] == 1.0 and m.num_ground_truth["cat"] == 1 and m.per_class_AP["dog"] == 0.5
    path.write_text("2 n09999999\n")
    with pytest.raises(InputError, match="line 1: 'n09999999' is not one of the 3 classes"):
        read_blacklist(path, ds)


def test_submission_round_trip_and_errors(tmp_path: Path) -> None:
    ds = dataset(record("a", [[0, 0, 50, 50]], [1]), record("b", [], []), index={"a": 7, "b": 3})
    original = {"a": dets([[0, 0, 50, 50], [9, 10, 12, 13]], [0.75, 0.5], [1, 2]), "b": dets([], [], [])}
    path = tmp_path / "sub.txt"
    path.write_text(to_ilsvrc_submission(original, ds))
    back = load_ilsvrc_submission(path, ds)
    assert torch.equal(back["a"].boxes, original["a"].boxes) and back["a"].labels.tolist() == [1, 2]
    assert back["a"].scores.tolist() == pytest.approx([0.75, 0.5]) and len(back["b"]) == 0
    assert evaluate_ilsvrc(ds, back).per_class_AP == evaluate_ilsvrc(ds, original).per_class_AP
    for line, problem in [("5 1 0.5 1 1 5 5", "image index 5 is not in"), ("7 4 0.5 1 1 5 5", "class 4 is not in"),
                          ("7 1 nan 1 1 5 5", "line 1: expected"), ("7 1 0.5 1 1 5", "line 1: expected")]:
        path.write_text(line + "\n")
        with pytest.raises(InputError, match=problem):
            load_ilsvrc_submission(path, ds)


def test_compiled_matching_equals_the_readable_one(rng: np.random.Generator) -> None:
    """evaluate_ilsvrc's compiled all-images matching equals match_image image by image (crowded same-class
    boxes, ignored boxes, score ties), through the per-class AP it gives."""
    from detect.evaluation.ilsvrc import match_image

    records, by_image = [], {}
    for i in range(25):
        n = int(rng.integers(0, 8))
        xy = rng.integers(0, 120, (n, 2)).astype(float)
        gb = np.concatenate([xy, xy + rng.integers(3, 70, (n, 2))], axis=1)
        gl = rng.integers(1, 3, n)
        records.append(record(f"i{i}", gb.tolist(), gl.tolist(), (rng.random(n) < 0.2).tolist()))
        m = int(rng.integers(0, 20))
        db = (gb[rng.integers(0, n, m)] if n else np.tile([[0.0, 0, 30, 30]], (m, 1))) + rng.normal(0, 5, (m, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        by_image[f"i{i}"] = dets(db.tolist(), rng.choice([0.3, 0.5, 0.9], m).tolist(), rng.integers(1, 3, m).tolist())
    ds = dataset(*records)
    m = evaluate_ilsvrc(ds, by_image)
    scores, labels, tps, fps, npos = [], [], [], [], np.zeros(4)
    for rec in records:
        d = by_image[rec.image_id]
        tp, fp = match_image(d, rec.boxes.numpy(), rec.labels.numpy(), rec.ignore.numpy())
        scores.append(d.scores.double().numpy()), labels.append(d.labels.numpy()), tps.append(tp), fps.append(fp)
        np.add.at(npos, rec.labels.numpy()[~rec.ignore.numpy()], 1)
    s, lab, tp, fp = (np.concatenate(x) for x in (scores, labels, tps, fps))
    order = np.argsort(-s, kind="stable")
    for k, name in ((1, "cat"), (2, "dog")):
        sel = order[lab[order] == k]
        ctp, cfp = np.cumsum(tp[sel]), np.cumsum(fp[sel])
        expected = voc_ap(ctp / npos[k], ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps))
        assert m.per_class_AP[name] == expected
        assert m.num_detections[name] == len(sel)
    assert 0 < m.per_class_AP["cat"] < 1
