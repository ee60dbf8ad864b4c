"""Benchmark: `detect eval --results` (our evaluator) against pycocotools and faster-coco-eval, whole commands.

Input of COCO val's size: coco128's ground truth replicated to ``--images`` images (new image and annotation
ids, segmentations kept so JSON loading is realistic) with ``--dets`` detections per image (jittered ground
truth, some with a wrong class, plus random boxes; random scores; fixed seed). Each path runs as its own
Python process on the same two JSON files, and its CPU time (user + system, start-up and imports included)
is read from ``resource.getrusage(RUSAGE_CHILDREN)``:

* pycocotools: ``COCO(gt)``, ``loadRes(dets)``, ``COCOeval(..., "bbox")`` evaluate / accumulate / summarize;
* faster-coco-eval (where importable; else "not installed"): the same with its drop-in classes;
* ours: ``python -m detect eval --annotations gt.json --results dets.json``.

The numbers must agree: pycocotools' process saves its 12 stats and ``eval`` arrays, which are compared
with ours (to 1e-12, stats identical) and with the AP our command printed; the script exits 1 otherwise.
Also measured: ``python -c "import detect.commands.evaluate"`` (and whether it loaded torch), and the ILSVRC
evaluator on an ILSVRC-val-sized synthetic set (``--ilsvrc-images`` 20,121 images, 200 classes), per image
against our COCO evaluator's function on the COCO input (both in this process, CPU time).

    python bench/eval.py                      # 5,000 images x 100 detections (COCO val size)
    python bench/eval.py --images 2000
    python bench/eval.py --images 500 --ilsvrc-images 2000   # quicker on a busy 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repo, not bench/ (bench/proposals.py would shadow the package)

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


PYCOCOTOOLS = """
import sys, contextlib, io, numpy as np
{imports}
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2]); ev = COCOeval(gt, dt, "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
np.savez(sys.argv[3], stats=np.asarray(ev.stats[:12]), precision=ev.eval["precision"], recall=ev.eval["recall"],
         scores=ev.eval["scores"])
"""


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; return (its CPU seconds, user + system, children included; wall seconds; stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, proc.stdout + proc.stderr


def importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def ilsvrc_set(n_images: int, per_image: int, seed: int):
    """An ILSVRC-val-sized data set in memory: 200 classes, 1-4 boxes per image (val has 2.8 on average),
    ``per_image`` detections (jittered ground truth, then random boxes)."""
    import torch

    from detect.datasets import DetectionDataset, ImageRecord
    from detect.structures import Detections

    rng = np.random.default_rng(seed)
    names = [f"n{k:08d}" for k in range(1, 201)]
    records, dets = [], {}
    for i in range(n_images):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 200, (n, 2))], axis=1)
        labels = rng.integers(1, 201, n)
        rec = ImageRecord(f"ILSVRC2013_val_{i:08d}", Path(f"{i}.JPEG"), 500, 500, torch.tensor(boxes, dtype=torch.float32),
                          torch.tensor(labels), torch.zeros(n, dtype=torch.bool))
        records.append(rec)
        m = per_image - n
        jit = boxes + rng.normal(0, 6, boxes.shape)
        rxy = rng.uniform(0, 400, (m, 2))
        rand = np.concatenate([rxy, rxy + rng.uniform(8, 100, (m, 2))], axis=1)
        b = np.concatenate([jit, rand])
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
        dets[rec.image_id] = Detections(torch.tensor(b, dtype=torch.float32), torch.tensor(rng.random(per_image), dtype=torch.float32),
                                        torch.tensor(np.concatenate([labels, rng.integers(1, 201, m)])))
    return DetectionDataset(records, names, names, "ilsvrc", Path("synthetic")), dets


def cpu_of(func, *args):
    start = time.process_time()
    out = func(*args)
    return time.process_time() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT_GT, help="ground truth to replicate")
    parser.add_argument("--images", type=int, default=5000, help="images (COCO val: 5,000)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--ilsvrc-images", type=int, default=20121, help="ILSVRC DET val: 20,121 (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    raw = json.loads(args.annotations.read_text())
    gt = replicate(raw, args.images)
    dets = make_detections(gt, args.dets, args.seed)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        gt_path, dets_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        dets_path.write_text(json.dumps(dets))
        print(f"{args.images} images, {len(gt['annotations'])} ground-truth boxes, {len(dets)} detections "
              f"(gt {gt_path.stat().st_size / 1e6:.0f} MB, dets {dets_path.stat().st_size / 1e6:.0f} MB)\n")
        py = sys.executable
        # ours first once, untimed, so numba's compile cache is warm as for any later run
        timed([py, "-m", "detect", "eval", "--annotations", str(gt_path), "--results", str(dets_path)])
        rows: dict[str, tuple[float, float] | None] = {}
        ref = Path(tmp) / "ref.npz"
        cpu, wall, _ = timed([py, "-c", PYCOCOTOOLS.format(imports="from pycocotools.coco import COCO\n"
                                                                  "from pycocotools.cocoeval import COCOeval"),
                              str(gt_path), str(dets_path), str(ref)])
        rows["pycocotools 2.0 (raw)"] = (cpu, wall)
        if importable("faster_coco_eval"):
            cpu, wall, _ = timed([py, "-c", PYCOCOTOOLS.format(
                imports="from faster_coco_eval import COCO, COCOeval_faster as COCOeval"),
                                  str(gt_path), str(dets_path), str(Path(tmp) / "fce.npz")])
            rows["faster-coco-eval"] = (cpu, wall)
        else:
            rows["faster-coco-eval"] = None
        cpu, wall, out = timed([py, "-m", "detect", "eval", "--annotations", str(gt_path), "--results", str(dets_path)])
        rows["ours (`detect eval --results`)"] = (cpu, wall)
        imp_cpu, imp_wall, imp_out = timed([py, "-c", "import sys, detect.commands.evaluate; "
                                                     "print('torch' in sys.modules)"])
        reference = np.load(ref)
        from detect.evaluation.coco import evaluate_coco, read_coco_ground_truth

        cgt = read_coco_ground_truth(gt_path)
        evaluate_coco(cgt, dets[:100])  # load numba's compiled code outside the timing
        coco_cpu, mine = cpu_of(evaluate_coco, cgt, dets)  # the evaluator alone, for the per-image figure
        same_stats = [getattr(mine, n) for n in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
                                                 "ARs", "ARm", "ARl")] == reference["stats"].tolist()
        worst = max(float(np.abs(getattr(mine, n) - reference[n]).max()) for n in ("precision", "recall", "scores"))
        printed = re.search(r"^AP\s+([-0-9.]+)", out, re.M)
        same_print = printed is not None and abs(float(printed.group(1)) - reference["stats"][0]) < 5e-5
        ok = same_stats and worst <= 1e-12 and same_print
    ref_cpu = rows["pycocotools 2.0 (raw)"][0]
    print("| path | CPU s (whole process) | x pycocotools | wall s |")
    print("|---|---:|---:|---:|")
    for name, value in rows.items():
        if value is None:
            print(f"| {name} | not installed | | |")
        else:
            print(f"| {name} | {value[0]:.2f} | {value[0] / ref_cpu:.3f} | {value[1]:.1f} |")
    print(f"\nours vs pycocotools: 12 stats identical: {same_stats}; largest difference in precision/recall/scores: "
          f"{worst:.1e}; printed AP agrees: {same_print}")
    print(f"`python -c 'import detect.commands.evaluate'`: {imp_cpu:.2f} CPU s, torch loaded: {imp_out.strip()}")
    print(f"our COCO evaluator alone (evaluate_coco on parsed input): {coco_cpu:.2f} CPU s, "
          f"{1e3 * coco_cpu / args.images:.3f} ms/image")
    if args.ilsvrc_images:
        from detect.evaluation.ilsvrc import evaluate_ilsvrc

        dataset, by_image = ilsvrc_set(args.ilsvrc_images, args.dets, args.seed)
        evaluate_ilsvrc(dataset, dict(list(by_image.items())[:10]))  # compile cache load
        il_cpu, metrics = cpu_of(evaluate_ilsvrc, dataset, by_image)
        print(f"ILSVRC evaluator (evaluate_ilsvrc), {args.ilsvrc_images} images x {args.dets} detections, 200 classes: "
              f"{il_cpu:.2f} CPU s, {1e3 * il_cpu / args.ilsvrc_images:.3f} ms/image (mAP {metrics.mAP:.4f}); "
              f"x COCO per image: {(il_cpu / args.ilsvrc_images) / (coco_cpu / args.images):.2f}")
    if not ok:
        print("ours differs from pycocotools", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
