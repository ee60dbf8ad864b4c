"""`detect demo`: see the whole detector learn and work, offline, on a CPU, in a few minutes.

No weights, no GPU, no network: the demo draws a small synthetic detection set (three shapes that differ
by shape only, in random colours and sizes, painted on the photographs scikit-image ships; train and test
on different photographs), trains a region classifier from scratch with `detect train`, evaluates it on
the test split with `detect eval` (COCO AP, per-class table, precision-recall curves) and runs
`detect run` on a few test photos, writing annotated pictures. Each step is the real command, so what
works here is what works on your data.

Examples:
  detect demo                                   # everything under runs/demo (about 5 minutes on 2 CPU cores)
  detect demo --out /tmp/demo --epochs 1        # quicker, less accurate
  detect demo --device cuda                     # the same on a GPU

Run again with the same --out to reuse what is done (the data, a finished or interrupted training).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import time
from pathlib import Path

from backbone.errors import InputError
from backbone.files import read_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=96, help="synthetic training images (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=32, help="synthetic test images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the from-scratch recipe's)")
    parser.add_argument("--vis-images", type=int, default=4, help="test photos to draw detections on (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: %(default)s)")


def _step(number: int, text: str) -> None:
    print(f"[{number}/4] {text}", flush=True)


def _call(argv: list[str]) -> None:
    """Run one ``detect`` subcommand in this process, exactly as the console command would."""
    from detect import cli

    print("      $ detect " + shlex.join(argv), flush=True)
    args = cli.build_parser(argv).parse_args(argv)
    code = args.func(args)
    if code:
        raise InputError(None, f"'detect {argv[0]}' failed (exit code {code})")


def main(args: argparse.Namespace) -> int:
    from detect.synthetic import SCRATCH_RECIPE, ShapesConfig, make_shapes, skimage_backgrounds

    if args.train_images < 8 or args.test_images < 1 or args.vis_images < 0:
        raise InputError(None, "need --train-images >= 8, --test-images >= 1 and --vis-images >= 0")
    out: Path = args.out
    config = ShapesConfig(train_images=args.train_images, test_images=args.test_images, seed=args.seed)
    data = out / "data"
    start = time.perf_counter()

    _step(1, f"drawing {args.train_images} + {args.test_images} synthetic images (disc, triangle, cross "
             f"on scikit-image's photographs) -> {data}")
    train_json, test_json = data / "train.json", data / "test.json"
    wanted = json.loads(json.dumps(config.to_dict()))  # as the file holds it (tuples become lists)
    if test_json.exists() and read_json(test_json).get("info", {}).get("config") == wanted:
        print("      reusing the images already there", flush=True)
    else:
        make_shapes(data, skimage_backgrounds(), config)

    run = out / "model"
    _step(2, f"training a region classifier from scratch -> {run}")
    if (run / "model.pt").exists():
        print(f"      reusing {run / 'model.pt'} (delete it to train again)", flush=True)
    else:
        argv = ["train", "--annotations", str(train_json), "--images", str(data / "train"), *SCRATCH_RECIPE,
                "--seed", str(args.seed), "--device", args.device, "--out", str(run)]
        if args.epochs is not None:
            argv += ["--epochs", str(args.epochs)]
        if (run / "last.pt").exists():
            argv.append("--resume")
        _call(argv)

    evaluation = out / "eval"
    _step(3, f"evaluating on {args.test_images} test images (photographs never seen in training) -> {evaluation}")
    _call(["eval", "--annotations", str(test_json), "--images", str(data / "test"), "--weights",
           str(run / "model.pt"), "--proposals", "ss", "--device", args.device, "--out", str(evaluation),
           "--plots"])

    vis = out / "vis"
    pictures = sorted((data / "test").glob("*.jpg"))[: args.vis_images]
    if pictures:
        _step(4, f"detecting on {len(pictures)} test photos -> {vis}")
        _call(["run", *map(str, pictures), "--weights", str(run / "model.pt"), "--proposals", "ss",
               "--device", args.device, "--save-vis", str(vis), "--score-threshold", "0.5"])
    summary = read_json(evaluation / "summary.json")["metrics"]
    print()
    print(f"done in {time.perf_counter() - start:.0f} s: test AP {summary['AP']:.3f}, AP50 {summary['AP50']:.3f}")
    print(f"  data:        {train_json}, {test_json}")
    print(f"  model:       {run / 'model.pt'} (training log: {run / 'log.jsonl'})")
    print(f"  evaluation:  {evaluation / 'summary.json'}, precision-recall curves in {evaluation / 'plots'}")
    if pictures:
        print(f"  pictures:    {vis}")
    print(f"  next:        detect run YOUR_PHOTO.jpg --weights {run / 'model.pt'} --proposals ss")
    return 0
