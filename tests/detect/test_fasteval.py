"""Our COCO evaluator (detect.evaluation.cocoeval) against pycocotools' COCOeval, the reference: the 12 stats
identical and eval["precision"], ["recall"], ["scores"] equal to 1e-12, on coco128-derived detections and on
hand-made edge cases (crowds, empty results, empty ground truth, the maxDets cut, score ties, area ranges,
images without detections, equal IoUs, an annotation id 0) and on random small scenes made to hit ties."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation.coco import STAT_NAMES, coco_ground_truth_from_json, evaluate_coco

ATOL = 1e-12


def reference(gt: dict, results: list[dict]) -> COCOeval:
    """pycocotools as its README runs it; an empty results list as a results object without annotations
    (``loadRes([])`` crashes)."""
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO()
        api.dataset = copy.deepcopy(gt)
        api.createIndex()
        if results:
            dt = api.loadRes(copy.deepcopy(results))
        else:
            dt = COCO()
            dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(api, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_same(gt: dict, results: list[dict]) -> None:
    ref = reference(gt, results)
    ours = evaluate_coco(coco_ground_truth_from_json(gt, "gt.json"), copy.deepcopy(results))
    assert [getattr(ours, n) for n in STAT_NAMES] == [float(v) for v in ref.stats]  # identical
    for name, mine in (("precision", ours.precision), ("recall", ours.recall), ("scores", ours.scores)):
        assert mine.shape == ref.eval[name].shape, name
        np.testing.assert_allclose(mine, ref.eval[name], rtol=0, atol=ATOL, err_msg=name)


def jittered(raw: dict, rng: np.random.Generator, *, fp_per_image: int = 8, score_decimals: int | None = None,
             skip_images: float = 0.0) -> list[dict]:
    """Jittered ground truth (10% with a wrong class, some duplicated) + random false positives; scores
    rounded to ``score_decimals`` make ties; a ``skip_images`` share of images gets no detections."""
    cats = [c["id"] for c in raw["categories"]]
    skipped = {img["id"] for img in raw["images"] if rng.random() < skip_images}
    out = []
    for a in raw["annotations"]:
        if a["image_id"] in skipped:
            continue
        x, y, w, h = a["bbox"]
        for _ in range(1 + int(rng.random() < 0.2)):  # a duplicate now and then
            j = rng.normal(0, 0.15, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
            out.append({"image_id": a["image_id"], "category_id": cat,
                        "bbox": [x + j[0], y + j[1], max(w + j[2], 0.5), max(h + j[3], 0.5)],
                        "score": float(rng.random())})
    for img in raw["images"]:
        if img["id"] in skipped:
            continue
        for _ in range(fp_per_image):
            x, y = rng.random() * img["width"], rng.random() * img["height"]
            out.append({"image_id": img["id"], "category_id": int(rng.choice(cats)),
                        "bbox": [x, y, rng.random() * (img["width"] - x), rng.random() * (img["height"] - y)],
                        "score": float(rng.random())})
    order = rng.permutation(len(out))  # the file's order is not the image order
    out = [out[i] for i in order]
    if score_decimals is not None:
        for d in out:
            d["score"] = round(d["score"], score_decimals)
    return out


@pytest.fixture(scope="module")
def coco128_raw(coco128: dict[str, Path]) -> dict:
    return json.loads(coco128["annotations"].read_text())


@pytest.mark.parametrize("seed, decimals, skip", [(0, None, 0.0), (1, 1, 0.0), (2, 2, 0.3)])
def test_coco128_jittered(coco128_raw: dict, seed: int, decimals: int | None, skip: float) -> None:
    results = jittered(coco128_raw, np.random.default_rng(seed), score_decimals=decimals, skip_images=skip)
    assert_same(coco128_raw, results)


def test_coco128_max_dets_cut(coco128_raw: dict) -> None:
    """More than 100 detections of one class in an image: pycocotools keeps the 100 best per (image, class)."""
    rng = np.random.default_rng(3)
    results = jittered(coco128_raw, rng, fp_per_image=2)
    img = coco128_raw["images"][0]
    anns = [a for a in coco128_raw["annotations"] if a["image_id"] == img["id"]]
    for i in range(250):
        a = anns[i % len(anns)]
        x, y, w, h = a["bbox"]
        results.append({"image_id": img["id"], "category_id": a["category_id"],
                        "bbox": [x + rng.normal(0, 3), y + rng.normal(0, 3), w, h], "score": float(rng.random())})
    assert_same(coco128_raw, results)


def test_coco128_empty_results(coco128_raw: dict) -> None:
    assert_same(coco128_raw, [])


def scene(annotations: list[dict], n_images: int = 3, cats: tuple[int, ...] = (1, 3)) -> dict:
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in range(n_images)]
    anns = [{"id": i + 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]
    for a in anns:
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cats]}


def det(image: int, cat: int, bbox: list[float], score: float) -> dict:
    return {"image_id": image, "category_id": cat, "bbox": bbox, "score": score}


def test_crowd_boxes() -> None:
    """A crowd box is matched by IoU with the detection's own area as denominator, any number of times,
    and its detections are ignored; regular boxes are preferred."""
    gt = scene([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},
                {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30]},
                {"image_id": 2, "category_id": 1, "bbox": [50, 50, 100, 100], "iscrowd": 1}])
    results = [det(1, 1, [10, 10, 30, 30], 0.9), det(1, 1, [12, 12, 30, 30], 0.8), det(1, 1, [60, 60, 20, 20], 0.7),
               det(1, 1, [0, 0, 150, 150], 0.6), det(2, 1, [55, 55, 10, 10], 0.95), det(2, 1, [40, 40, 30, 30], 0.5),
               det(3, 1, [0, 0, 10, 10], 0.3)]
    assert_same(gt, results)


def test_empty_ground_truth() -> None:
    assert_same(scene([]), [det(1, 1, [0, 0, 10, 10], 0.5)])
    assert_same(scene([]), [])


def test_area_ranges_use_the_area_field_and_bounds_are_inclusive() -> None:
    gt = scene([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 32]},  # area 1024: small and medium
                {"image_id": 1, "category_id": 1, "bbox": [100, 100, 96, 96]},  # 9216: medium and large
                {"image_id": 2, "category_id": 3, "bbox": [0, 0, 50, 50], "area": 500.0},  # segment area: small
                {"image_id": 2, "category_id": 3, "bbox": [60, 60, 20, 20], "area": 5000.0}])  # medium
    results = [det(1, 1, [0, 0, 32, 32], 0.9), det(1, 1, [100, 100, 96, 96], 0.8), det(2, 3, [0, 0, 50, 50], 0.7),
               det(2, 3, [60, 60, 20, 20], 0.6), det(2, 3, [150, 150, 5, 5], 0.95),  # small false positive
               det(1, 1, [0, 100, 100, 100], 0.85)]  # large false positive
    assert_same(gt, results)


def test_images_without_detections_and_detections_without_ground_truth() -> None:
    gt = scene([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
                {"image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 40]}], n_images=4)
    assert_same(gt, [det(1, 1, [0, 0, 40, 40], 0.9), det(4, 3, [0, 0, 40, 40], 0.8)])


def test_score_ties_and_equal_ious() -> None:
    """Equal scores keep the file's order (per image, then across images in image-id order); equal IoUs go
    to the last ground truth with that IoU."""
    gt = scene([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
                {"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},
                {"image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 40]},
                {"image_id": 3, "category_id": 1, "bbox": [0, 0, 20, 20]}])
    results = [det(3, 1, [0, 0, 20, 20], 0.5), det(2, 1, [100, 100, 10, 10], 0.5), det(1, 1, [0, 0, 40, 40], 0.5),
               det(1, 1, [2, 2, 40, 40], 0.5), det(2, 1, [10, 10, 40, 40], 0.5), det(1, 1, [0, 0, 40, 40], 0.5)]
    assert_same(gt, results)


def test_max_dets_1_and_10_take_the_best_per_image() -> None:
    gt = scene([{"image_id": 1, "category_id": 1, "bbox": [10 * i, 0, 10, 10]} for i in range(15)])
    results = [det(1, 1, [10 * i, 0, 10, 10], 0.1 + 0.05 * i) for i in range(15)]
    assert_same(gt, results)


def test_annotation_id_zero() -> None:
    """pycocotools records a match by the ground truth's id, so a match to id 0 counts as none."""
    gt = scene([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}])
    gt["annotations"][0]["id"] = 0
    assert_same(gt, [det(1, 1, [0, 0, 40, 40], 0.9)])


@pytest.mark.parametrize("seed", range(40))
def test_random_scenes(seed: int) -> None:
    """Boxes on a coarse grid (equal IoUs, touching edges, containment), crowds, a few score levels."""
    rng = np.random.default_rng(100 + seed)
    n_images, cats = int(rng.integers(1, 5)), (1, 2, 7)

    def box() -> list[float]:
        x, y = (rng.integers(0, 8, 2) * 10).tolist()
        return [x, y, int(rng.integers(1, 6)) * 10, int(rng.integers(1, 6)) * 10]

    anns = []
    for _ in range(int(rng.integers(0, 12))):
        b = box()
        a = {"image_id": int(rng.integers(1, n_images + 1)), "category_id": int(rng.choice(cats)), "bbox": b,
             "iscrowd": int(rng.random() < 0.15)}
        if rng.random() < 0.3:
            a["area"] = float(rng.choice([500.0, 1024.0, 2000.0, 9216.0, 12000.0]))
        anns.append(a)
    results = [det(int(rng.integers(1, n_images + 1)), int(rng.choice(cats)), box(),
                   float(rng.choice([0.2, 0.5, 0.5, 0.9]))) for _ in range(int(rng.integers(0, 30)))]
    assert_same(scene(anns, n_images, cats), results)
