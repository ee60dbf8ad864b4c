"""Learnability benchmark: can the detector learn, from scratch, through the code users run?

A synthetic detection set (:mod:`detect.synthetic`: three shapes that differ by shape only — disc,
triangle, cross — in random colours, sizes 30-120 px and aspects up to 1.5, painted on real photographs;
train and test drawn on different photographs, seeded) is written in COCO format; a region classifier is
trained from random initialisation by ``detect train`` (called in-process through ``detect.cli.main``,
the exact code of the console command) and evaluated on the test split by ``detect eval --weights`` (the
same). Prints one table: AP, AP50, AP75, per-class AP and AP50, training time, steps, crops/s.

Issue 10's target on the 2-core CPU box: AP50 >= 0.95 and AP >= 0.80 on the test split with <= 10 minutes
of training. Run (about 15 minutes on 2 idle cores: drawing 10 s, proposals ~2 min, training, eval ~2 min):

    python bench/learnability.py --out /tmp/learnability
    python bench/learnability.py --out /tmp/learnability --backgrounds skimage        # no coco128 needed
    python bench/learnability.py --out /tmp/l2 --train-args="--epochs 2"               # override a flag

Backgrounds: coco128's photographs (``--coco128 DIR``, default ``../shared/data/coco128/train2017``
beside the checkout) plus scikit-image's bundled photographs; ``--backgrounds skimage`` uses only the
latter. ``--out`` gets ``data/`` (the set), ``run/`` (the training output), ``eval/`` (summary.json,
detections.json) and ``learnability.json`` (the table's numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.files import read_json, write_json  # noqa: E402
from detect import cli  # noqa: E402
from detect.synthetic import SCRATCH_RECIPE, ShapesConfig, folder_backgrounds, make_shapes, skimage_backgrounds  # noqa: E402

DEFAULT_COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128" / "train2017"


def per_class_ap50(detections: Path, annotations: Path) -> dict[str, float]:
    """AP at IoU 0.5 per class (area all, 100 detections) from pycocotools' precision array."""
    from detect.datasets import read_coco
    from detect.evaluation import evaluate_coco, load_coco_results

    dataset = read_coco(annotations)
    return evaluate_coco(dataset, load_coco_results(detections, dataset)).per_class_AP50()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder (must not hold a previous run)")
    parser.add_argument("--backgrounds", choices=["coco128+skimage", "skimage"], default="coco128+skimage")
    parser.add_argument("--coco128", type=Path, default=DEFAULT_COCO128, help="folder of coco128's images")
    parser.add_argument("--seed", type=int, default=0, help="data set and training seed")
    parser.add_argument("--train-images", type=int, default=ShapesConfig.train_images)
    parser.add_argument("--test-images", type=int, default=ShapesConfig.test_images)
    parser.add_argument("--train-args", default="", help="extra 'detect train' flags (override the recipe)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    backgrounds = skimage_backgrounds()
    if args.backgrounds != "skimage":
        if not args.coco128.is_dir():
            parser.error(f"{args.coco128}: no such folder (pass --coco128 DIR or --backgrounds skimage)")
        backgrounds = folder_backgrounds(args.coco128) + backgrounds
    config = ShapesConfig(train_images=args.train_images, test_images=args.test_images, seed=args.seed)
    t0 = time.perf_counter()
    train, test = make_shapes(args.out / "data", backgrounds, config)
    draw_s = time.perf_counter() - t0

    run = args.out / "run"
    train_argv = ["train", "--annotations", str(train.annotations), "--images", str(train.images),
                  *SCRATCH_RECIPE, "--seed", str(args.seed), "--device", args.device, "--out", str(run),
                  *shlex.split(args.train_args)]
    print("$ detect " + shlex.join(train_argv), flush=True)
    t0 = time.perf_counter()
    if cli.main(train_argv) != 0:
        return 1
    train_wall = time.perf_counter() - t0
    history = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_s = sum(r["time_s"] for r in history)
    steps = history[-1]["step"]
    regions = steps * int(read_json(run / "config.json")["meta"]["regions_per_batch"])

    eval_dir = args.out / "eval"
    eval_argv = ["eval", "--annotations", str(test.annotations), "--images", str(test.images),
                 "--weights", str(run / "model.pt"), "--proposals", "ss", "--device", args.device,
                 "--out", str(eval_dir)]
    print("$ detect " + shlex.join(eval_argv), flush=True)
    t0 = time.perf_counter()
    if cli.main(eval_argv) != 0:
        return 1
    eval_s = time.perf_counter() - t0
    summary = read_json(eval_dir / "summary.json")
    ap50 = per_class_ap50(eval_dir / "detections.json", test.annotations)

    m = summary["metrics"]
    result = {
        "AP": m["AP"], "AP50": m["AP50"], "AP75": m["AP75"], "per_class_AP": summary["per_class_AP"],
        "per_class_AP50": ap50, "train_s": train_s, "train_wall_s": train_wall, "steps": steps,
        "crops_per_s": regions / train_s if train_s else 0.0, "eval_s": eval_s, "draw_s": draw_s,
        "train_images": train.num_images, "train_boxes": train.num_boxes, "test_images": test.num_images,
        "test_boxes": test.num_boxes, "train_argv": train_argv, "eval_argv": eval_argv,
        "load_average": os.getloadavg(), "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }
    write_json(args.out / "learnability.json", result, indent=2)

    target = "met" if m["AP50"] >= 0.95 and m["AP"] >= 0.80 and train_s <= 600 else "NOT met"
    print()
    print("| split | images | boxes | AP | AP50 | AP75 | train s | steps | crops/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| test | {test.num_images} | {test.num_boxes} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['AP75']:.3f} | "
          f"{train_s:.0f} | {steps} | {result['crops_per_s']:.0f} |")
    print()
    print("| class | AP | AP50 |")
    print("|---|---:|---:|")
    for name, ap in summary["per_class_AP"].items():
        print(f"| {name} | {ap:.3f} | {ap50[name]:.3f} |")
    print()
    print(f"target AP50 >= 0.95, AP >= 0.80, training <= 600 s: {target} "
          f"(proposals+setup {train_wall - train_s:.0f} s, eval {eval_s:.0f} s, "
          f"load {' '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
