"""From-scratch detection on real photographs: coco128, split by image, trained and scored by the CLIs.

No pretrained weights can be had on the team's machines, so this is what a region classifier learns from
random initialisation on 96 real COCO photographs in a few CPU-hours — an honest, low figure, not the
paper's setting (ImageNet initialisation, ILSVRC's 450k images). coco128's images are split by image
(seeded: 96 train, 32 test), a region classifier is trained by ``detect train`` with the from-scratch
recipe (:data:`detect.synthetic.SCRATCH_RECIPE`, the flags measured on the shapes set) and evaluated on
the held-out images by ``detect eval --weights``; the table lists AP/AP50 and the per-class AP50 of the
most frequent classes with their ground-truth counts, and the training accuracy per epoch (has it
plateaued?).

    python bench/coco128_scratch.py --out /tmp/coco128-scratch                      # ~1 h on 2 idle cores
    python bench/coco128_scratch.py --out /tmp/c2 --train-args="--epochs 8 --crop-size 64"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.files import read_json, write_json  # noqa: E402
from detect import cli  # noqa: E402
from detect.synthetic import SCRATCH_RECIPE  # noqa: E402

DEFAULT_COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"


def split_coco(annotations: Path, out: Path, *, test_images: int, seed: int) -> tuple[Path, Path]:
    """Write ``train.json`` and ``test.json`` under ``out``: a seeded split of the images (all categories kept)."""
    data = read_json(annotations)
    order = np.random.default_rng(seed).permutation(len(data["images"]))
    test_ids = {data["images"][i]["id"] for i in order[:test_images]}
    paths = []
    for name, keep in (("train", lambda i: i not in test_ids), ("test", lambda i: i in test_ids)):
        part = dict(data, images=[im for im in data["images"] if keep(im["id"])],
                    annotations=[a for a in data["annotations"] if keep(a["image_id"])])
        write_json(out / f"{name}.json", part)
        paths.append(out / f"{name}.json")
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--coco128", type=Path, default=DEFAULT_COCO128)
    parser.add_argument("--test-images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--top-classes", type=int, default=8, help="per-class rows for the most frequent classes")
    parser.add_argument("--train-args", default="", help="extra 'detect train' flags")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    images = args.coco128 / "train2017"
    train_json, test_json = split_coco(args.coco128 / "annotations" / "instances_train2017.json", args.out,
                                       test_images=args.test_images, seed=args.seed)
    run = args.out / "run"
    train_argv = ["train", "--annotations", str(train_json), "--images", str(images), *SCRATCH_RECIPE,
                  "--epochs", str(args.epochs), "--seed", str(args.seed), "--device", args.device, "--out", str(run),
                  *shlex.split(args.train_args)]
    if (run / "last.pt").exists() and not (run / "model.pt").exists():
        train_argv.append("--resume")
    if not (run / "model.pt").exists():
        print("$ detect " + shlex.join(train_argv), flush=True)
        if cli.main(train_argv) != 0:
            return 1
    eval_argv = ["eval", "--annotations", str(test_json), "--images", str(images), "--weights", str(run / "model.pt"),
                 "--proposals", "ss", "--device", args.device, "--out", str(args.out / "eval")]
    print("$ detect " + shlex.join(eval_argv), flush=True)
    t0 = time.perf_counter()
    if cli.main(eval_argv) != 0:
        return 1
    eval_s = time.perf_counter() - t0

    summary = read_json(args.out / "eval" / "summary.json")
    test = read_json(test_json)
    names = {c["id"]: c["name"] for c in test["categories"]}
    counts = Counter(names[a["category_id"]] for a in test["annotations"] if not a.get("iscrowd", 0))
    from detect.datasets import read_coco
    from detect.evaluation import evaluate_coco, load_coco_results

    dataset = read_coco(test_json, images)
    ap50 = evaluate_coco(dataset, load_coco_results(args.out / "eval" / "detections.json", dataset)).per_class_AP50()
    history = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    m = summary["metrics"]
    print()
    print(f"coco128 from scratch: {len(test['images'])} held-out images, {sum(counts.values())} boxes; "
          f"AP {m['AP']:.4f}, AP50 {m['AP50']:.4f}, AR100 {m['AR100']:.4f} (eval {eval_s:.0f} s)")
    print()
    print("| class | test boxes | AP | AP50 |")
    print("|---|---:|---:|---:|")
    for name, n in counts.most_common(args.top_classes):
        print(f"| {name} | {n} | {summary['per_class_AP'].get(name, -1):.4f} | {ap50.get(name, -1):.4f} |")
    print()
    print("| epoch | loss | accuracy | positives correct | s |")
    print("|---:|---:|---:|---:|---:|")
    for r in history:
        print(f"| {r['epoch']} | {r['loss']:.3f} | {r['acc']:.3f} | {r['pos_acc']:.3f} | {r['time_s']:.0f} |")
    write_json(args.out / "coco128_scratch.json", {"metrics": m, "per_class_AP": summary["per_class_AP"],
                                                   "per_class_AP50": ap50, "test_counts": dict(counts),
                                                   "history": history, "train_argv": train_argv}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
