"""COCO evaluation: our numbers are pycocotools' own, including the empty cases; results-file checks."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backbone.errors import InputError
from detect.datasets import DetectionDataset, ImageRecord, read_coco
from detect.evaluation import (evaluate_coco, load_coco_results, results_to_detections, to_coco_results)
from detect.evaluation.coco import STAT_NAMES
from detect.structures import Detections


def raw_cocoeval(gt: COCO, results: list[dict], img_ids: list | None = None) -> COCOeval:
    """pycocotools exactly as its README runs it (loadRes on a copy: it mutates its input)."""
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def perturbed_results(raw: dict, rng: np.random.Generator, fp_per_image: int = 5) -> list[dict]:
    """Jittered ground-truth boxes (10% with a wrong class) + random false positives, random scores."""
    cats = [c["id"] for c in raw["categories"]]
    out = []
    for a in raw["annotations"]:
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.1, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
        out.append({"image_id": a["image_id"], "category_id": cat,
                    "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)], "score": float(rng.random())})
    for img in raw["images"]:
        for _ in range(fp_per_image):
            x, y = rng.random() * img["width"], rng.random() * img["height"]
            out.append({"image_id": img["id"], "category_id": int(rng.choice(cats)),
                        "bbox": [x, y, rng.random() * (img["width"] - x), rng.random() * (img["height"] - y)],
                        "score": float(rng.random())})
    return out


@pytest.fixture(scope="module")
def coco128_gt(coco128: dict[str, Path]) -> tuple[DetectionDataset, dict, COCO]:
    raw = json.loads(coco128["annotations"].read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(coco128["annotations"]))
    return read_coco(coco128["annotations"]), raw, api


def test_matches_pycocotools_on_coco128(coco128_gt, rng: np.random.Generator) -> None:
    ds, raw, api = coco128_gt
    results = perturbed_results(raw, rng)
    ours = evaluate_coco(ds, results)
    ref = raw_cocoeval(api, results)
    assert [getattr(ours, n) for n in STAT_NAMES] == [float(v) for v in ref.stats]  # exactly
    assert np.array_equal(ours.precision, ref.eval["precision"])
    assert 0.05 < ours.AP < 0.9  # a non-trivial case: neither all right nor all wrong
    k = ds.class_names.index("person")
    p = ref.eval["precision"][:, :, k, 0, -1]
    assert ours.per_class_AP["person"] == pytest.approx(p[p > -1].mean(), abs=0)
    # per-class AP50 = pycocotools' AP50 (stats[1]) with the evaluation restricted to that class
    person = [c["id"] for c in raw["categories"] if c["name"] == "person"][0]
    with contextlib.redirect_stdout(io.StringIO()):
        only = COCOeval(api, api.loadRes(results), "bbox")
        only.params.catIds = [person]
        only.evaluate(), only.accumulate(), only.summarize()
    assert ours.per_class_AP50()["person"] == pytest.approx(only.stats[1], abs=1e-12)
    assert ours.per_class_AP50()["person"] != pytest.approx(ours.per_class_AP["person"])
    # the same detections as {image_id: Detections} give the same numbers
    again = evaluate_coco(ds, results_to_detections(results, ds))
    assert again.stats() == pytest.approx(ours.stats(), abs=1e-6)


def test_subset_of_images_matches_pycocotools_img_ids(coco128_gt, rng: np.random.Generator) -> None:
    ds, raw, api = coco128_gt
    subset = DetectionDataset(ds.records[:20], ds.class_names, ds.category_ids, ds.kind, ds.source)
    ids = {r.image_id for r in subset.records}
    results = [r for r in perturbed_results(raw, rng, fp_per_image=2) if r["image_id"] in ids]
    ours = evaluate_coco(subset, results)
    ref = raw_cocoeval(api, results, img_ids=sorted(ids))
    assert [getattr(ours, n) for n in STAT_NAMES] == [float(v) for v in ref.stats]


def test_empty_detections_give_zero_where_there_is_ground_truth(coco128_gt) -> None:
    ds, raw, api = coco128_gt
    ours = evaluate_coco(ds, [])
    # pycocotools' loadRes([]) crashes; its COCOeval on a results object without annotations is the reference
    empty = COCO()
    empty.dataset = {"images": raw["images"], "categories": raw["categories"], "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
        ref = COCOeval(api, empty, "bbox")
        ref.evaluate(), ref.accumulate(), ref.summarize()
    assert [getattr(ours, n) for n in STAT_NAMES] == [float(v) for v in ref.stats] == [0.0] * 12
    present = {a["category_id"] for a in raw["annotations"]}
    for name, cid in zip(ds.class_names, ds.category_ids):
        assert ours.per_class_AP[name] == (0.0 if cid in present else -1.0)


def tiny_gt(tmp_path: Path, annotations: list[dict]) -> Path:
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
                       {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100}],
            "annotations": annotations, "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def test_empty_ground_truth_is_undefined(tmp_path: Path) -> None:
    path = tiny_gt(tmp_path, [])
    results = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.9}]
    ours = evaluate_coco(path, results)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = raw_cocoeval(COCO(str(path)), results)
    assert [getattr(ours, n) for n in STAT_NAMES] == [float(v) for v in ref.stats] == [-1.0] * 12
    assert ours.per_class_AP == {"cat": -1.0, "dog": -1.0}
    assert evaluate_coco(path, []).AP == -1.0


def test_no_images_is_undefined(tmp_path: Path) -> None:
    ds = read_coco(tiny_gt(tmp_path, []))
    none = DetectionDataset([], ds.class_names, ds.category_ids, "coco", ds.source)
    assert evaluate_coco(none, []).stats() == {n: -1.0 for n in STAT_NAMES}


def test_perfect_detections_on_inline_json(tmp_path: Path) -> None:
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0}]
    ds = read_coco(tiny_gt(tmp_path, anns))
    dets = {r.image_id: Detections(r.boxes, torch.ones(len(r.boxes)), r.labels) for r in ds.records}
    results = to_coco_results(dets, ds)
    assert {(r["image_id"], r["category_id"]) for r in results} == {(1, 3), (2, 1)}
    assert results[0]["bbox"] == pytest.approx([10, 10, 40, 30])
    m = evaluate_coco(ds, results)
    # pycocotools averages 101 ones to 0.9999999999999998
    assert (m.AP, m.AP50, m.AR100, m.APs, m.APm) == pytest.approx((1, 1, 1, 1, 1)) and m.APl == -1.0  # no large
    assert m.per_class_AP == pytest.approx({"cat": 1.0, "dog": 1.0})


def test_non_coco_dataset_is_converted(tmp_path: Path) -> None:
    boxes = torch.tensor([[0.0, 0, 50, 50], [60, 60, 90, 80]])
    rec = ImageRecord("img_1", tmp_path / "img_1.JPEG", 100, 100, boxes, torch.tensor([1, 2]),
                      torch.zeros(2, dtype=torch.bool))
    ds = DetectionDataset([rec], ["a", "b"], ["n00000001", "n00000002"], "ilsvrc", tmp_path)
    half = Detections(boxes[:1], torch.ones(1), torch.tensor([1]))
    results = to_coco_results({"img_1": half}, ds)
    assert results[0]["category_id"] == "n00000001" and results[0]["image_id"] == "img_1"
    m = evaluate_coco(ds, results)
    assert m.per_class_AP == pytest.approx({"a": 1.0, "b": 0.0}) and m.AP == pytest.approx(0.5)


@pytest.mark.parametrize("content, problem", [
    ("{nope", "not valid JSON"),
    ('{"image_id": 1}', "expected a JSON list"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]', "no 'score' field"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": NaN}]', "expected a finite number"),
    ('[{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]', "image_id 9"),
    ('[{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1}]', "category_id 2"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}]', "expected [x, y, w, h]"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}]', "negative width"),
])
def test_load_coco_results_errors(tmp_path: Path, content: str, problem: str) -> None:
    ds = read_coco(tiny_gt(tmp_path, []))
    path = tmp_path / "dets.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        load_coco_results(path, ds)
    assert str(err.value).startswith(str(path)) and problem in str(err.value) and "\n" not in str(err.value)


def test_results_matched_by_file_name_when_ids_differ(tmp_path: Path) -> None:
    """`detect run` numbers images without numeric names 1..N and records their file names."""
    boxes = torch.tensor([[0.0, 0, 50, 50]])
    rec = ImageRecord("ILSVRC2013_val_00000007", tmp_path / "ILSVRC2013_val_00000007.JPEG", 100, 100, boxes,
                      torch.tensor([1]), torch.zeros(1, dtype=torch.bool))
    ds = DetectionDataset([rec], ["a"], ["n00000001"], "ilsvrc", tmp_path)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": "n00000001", "bbox": [0, 0, 50, 50], "score": 0.5,
                                 "file_name": "ILSVRC2013_val_00000007.JPEG"}]))
    results = load_coco_results(path, ds)
    assert results[0]["image_id"] == "ILSVRC2013_val_00000007"
    assert evaluate_coco(ds, results).AP == pytest.approx(1.0)
