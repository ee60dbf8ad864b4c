"""Benchmark: our `detect eval` COCO path against raw pycocotools (and faster-coco-eval when importable).

Input of COCO val's size: coco128's ground truth replicated to ``--images`` images (new image and annotation
ids, segmentations kept so JSON loading is realistic) with ``--dets`` detections per image (jittered ground
truth, some with a wrong class, plus random boxes; random scores; fixed seed). Both paths read the same two
JSON files from disk. The numbers must be identical (``COCOeval.stats`` and the precision array); the
script exits 1 if they are not.

    python bench/eval.py                      # 5,000 images x 100 detections (COCO val size)
    python bench/eval.py --images 500         # quicker on a busy 2-core machine
    PYTHONPATH=/tmp/fce python bench/eval.py  # also faster-coco-eval (pip install --target /tmp/fce ...)

Prints a markdown table: CPU seconds of this process for load (JSON + index + our checks), evaluate,
accumulate (summarize is included in total), total, the ratio to pycocotools, and wall-clock seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repo, not bench/ (bench/proposals.py would shadow the package)

#: Stage times are this process's CPU seconds: on a shared machine wall-clock time mostly measures the
#: neighbours (all three paths are single-threaded). Wall-clock total is reported beside them.
clock = time.process_time
DEFAULT_GT = REPO.parent / "shared" / "data" / "coco128" / "annotations" / "instances_train2017.json"


def replicate(raw: dict, n_images: int) -> dict:
    """coco128's ground truth cycled to ``n_images`` images with fresh image and annotation ids."""
    by_image: dict[int, list[dict]] = {}
    for ann in raw["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images, anns = [], []
    for i in range(n_images):
        src = raw["images"][i % len(raw["images"])]
        images.append({**src, "id": i + 1})
        for ann in by_image.get(src["id"], []):
            anns.append({**ann, "id": len(anns) + 1, "image_id": i + 1})
    return {"info": raw.get("info", {}), "images": images, "annotations": anns, "categories": raw["categories"]}


def make_detections(gt: dict, per_image: int, seed: int) -> list[dict]:
    """``per_image`` detections per image: jittered ground truth (10% wrong class) then random boxes."""
    rng = np.random.default_rng(seed)
    cats = np.array([c["id"] for c in gt["categories"]])
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = []
    for img in gt["images"]:
        W, H = img["width"], img["height"]
        anns = by_image.get(img["id"], [])[:per_image]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = boxes + rng.normal(0, 0.1, boxes.shape) * boxes[:, [2, 3, 2, 3]]
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        wrong = rng.random(len(labels)) < 0.1
        labels[wrong] = rng.choice(cats, wrong.sum())
        n_rand = per_image - len(anns)
        xy = rng.random((n_rand, 2)) * [W, H]
        wh = np.maximum(rng.random((n_rand, 2)) * ([W, H] - xy), 1.0)
        boxes = np.concatenate([boxes, np.concatenate([xy, wh], axis=1)])
        labels = np.concatenate([labels, rng.choice(cats, n_rand)])
        # a detector ranks its hits above most of its misses: jittered ground truth scores in [0.3, 1),
        # random boxes in [0, 0.7)
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(anns)), rng.uniform(0.0, 0.7, n_rand)])
        for b, c, s in zip(np.round(boxes, 2).tolist(), labels.tolist(), scores.tolist()):
            out.append({"image_id": img["id"], "category_id": c, "bbox": b, "score": s})
    return out


def _run_api(COCO, COCOeval, gt_path: Path, dets_path: Path) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The plain pycocotools sequence, timed per stage, with an API of the same shape (pycocotools or
    faster-coco-eval's drop-in classes)."""
    t = {}
    with contextlib.redirect_stdout(io.StringIO()):
        start, wall = clock(), time.perf_counter()
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(dets_path))
        t["load"] = clock() - start
        ev = COCOeval(gt, dt, "bbox")
        for stage in ("evaluate", "accumulate", "summarize"):
            s = clock()
            getattr(ev, stage)()
            t[stage] = clock() - s
    t["total"] = clock() - start
    t["wall"] = time.perf_counter() - wall
    return t, np.asarray(ev.stats[:12]), np.asarray(ev.eval["precision"])


def run_pycocotools(gt_path: Path, dets_path: Path) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return _run_api(COCO, COCOeval, gt_path, dets_path)


def run_ours(gt_path: Path, dets_path: Path) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """What `detect eval --metric coco` does, stage by stage."""
    from detect.datasets import read_coco
    from detect.evaluation.coco import coco_ground_truth, coco_results_api, metrics_from_cocoeval, run_cocoeval
    from detect.evaluation.results import load_coco_results

    t: dict[str, float] = {}
    start, wall = clock(), time.perf_counter()
    dataset = read_coco(gt_path)
    results = load_coco_results(dets_path, dataset)
    cgt = coco_ground_truth(dataset)
    dt = coco_results_api(cgt, results)
    t["load"] = clock() - start
    ev = run_cocoeval(cgt, dt, timings=t, clock=clock)
    metrics = metrics_from_cocoeval(ev, cgt.class_names)
    t["total"] = clock() - start
    t["wall"] = time.perf_counter() - wall
    return t, np.array(list(metrics.stats().values())), metrics.precision


def run_faster_coco_eval(gt_path: Path, dets_path: Path) -> tuple[dict[str, float], np.ndarray, np.ndarray] | None:
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        return None
    return _run_api(COCO, COCOeval_faster, gt_path, dets_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT_GT, help="ground truth to replicate")
    parser.add_argument("--images", type=int, default=5000, help="images (COCO val: 5,000)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    raw = json.loads(args.annotations.read_text())
    gt = replicate(raw, args.images)
    dets = make_detections(gt, args.dets, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        gt_path, dets_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        dets_path.write_text(json.dumps(dets))
        print(f"{args.images} images, {len(gt['annotations'])} ground-truth boxes, {len(dets)} detections "
              f"(gt {gt_path.stat().st_size / 1e6:.0f} MB, dets {dets_path.stat().st_size / 1e6:.0f} MB)\n",
              file=sys.stderr)
        runs = {"pycocotools 2.0 (raw)": run_pycocotools(gt_path, dets_path),
                "ours (`detect eval`)": run_ours(gt_path, dets_path)}
        fast = run_faster_coco_eval(gt_path, dets_path)
        if fast is not None:
            runs["faster-coco-eval"] = fast
    ref_t, ref_stats, ref_prec = runs["pycocotools 2.0 (raw)"]
    print("| path | load | evaluate | accumulate | total (CPU s) | x pycocotools | wall s | AP | identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for name, (t, stats, prec) in runs.items():
        same = np.array_equal(stats, ref_stats) and np.array_equal(prec, ref_prec)
        if same:
            verdict = "yes"
        else:
            diff = np.abs(stats - ref_stats).max()
            pdiff = np.abs(prec - ref_prec).max() if prec.shape == ref_prec.shape else float("nan")
            verdict = f"no: stats differ by up to {diff:.1e}, precision by {pdiff:.1e}"

        if name.startswith("ours") and not same:
            ok = False
        print(f"| {name} | {t['load']:.2f} | {t['evaluate']:.2f} | {t['accumulate']:.2f} | {t['total']:.2f} | "
              f"{t['total'] / ref_t['total']:.2f} | {t['wall']:.1f} | {stats[0]:.4f} | {verdict} |")
    if not ok:
        print("ours differs from pycocotools", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
