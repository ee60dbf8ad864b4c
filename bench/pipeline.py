"""End-to-end detector speed: s/image for `--fast` mode and the full paper mode, with the stage split.

The detector is built as ``detect.pipeline.load_detector`` builds it (BatchNorm folded, conv+ReLU fused,
channels_last, bf16 only where native: ``detect.classifier.autocast_dtype``). ``--zero-shot`` replaces the trained
ensemble by the zero-shot ImageNet GoogLeNet (1000 classes summed into 200), as ``detect run`` without
``--weights``; ``--photo astronaut`` uses the README's photo, so the README's first command is
``--zero-shot --photo astronaut --modes paper`` (it has no MultiBox model: ``--no-multibox``).

Paper mode = selective search (fast strategies, superpixel scale 2) + 200 MultiBox boxes, deduplicated,
classified by an ensemble of 6 GoogLeNet region classifiers (200 classes + background), per-class NMS.
Fast mode = one model, single-strategy selective search, at most 300 proposals.

Model weights do not change speed, so the checkpoints are made here with random initialisation
(torchvision variant, 201 outputs; MultiBox with k-means priors of coco128's boxes).

    python bench/pipeline.py --device cpu --images 4 --modes fast          # CPU fast mode
    python bench/pipeline.py --device cpu --images 1 --modes paper         # CPU paper mode (minutes)
    python bench/pipeline.py --device cuda --images 32 --workers 14        # GPU, proposals overlapped
    python bench/pipeline.py --zero-shot --photo astronaut --no-multibox --images 1 --threads 2  # README, CPU

Wall s/image is the throughput over the whole run (on GPU after three warm-up images); with --workers > 1 the
selective search of upcoming images runs in worker processes while the current image is classified,
so wall time can be below the sum of the stages (the split shows per-image stage times).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repo, not bench/ (bench/proposals.py would shadow the package)

from backbone.fuse import prepare_for_inference_  # noqa: E402
from detect.classifier import Ensemble, RegionClassifier, autocast_dtype  # noqa: E402
from detect.pipeline import Detector, DetectorConfig  # noqa: E402


def coco128_images(n: int, folder: Path | None = None, photo: str | None = None) -> list[Path]:
    if photo:  # one of scikit-image's photos, e.g. the README's astronaut.png
        import skimage

        files = [Path(skimage.__file__).parent / "data" / f"{photo}.png"]
        return files * n
    folder = folder or REPO.parent / "shared" / "data" / "coco128" / "train2017"
    files = sorted(folder.glob("*.jpg"))
    if not files:
        sys.exit(f"no images in {folder}")
    return (files * (n // len(files) + 1))[:n]


def make_models(tmp: Path, n_models: int, num_classes: int = 200) -> list[str]:
    names = [f"class{i}" for i in range(num_classes)]
    paths = []
    for i in range(n_models):
        torch.manual_seed(i)
        rc = RegionClassifier.from_backbone(names, variant="torchvision", weights=None, aux_logits=False)
        path = tmp / f"rc{i}.pt"
        rc.save(path)
        paths.append(str(path))
    return paths


def make_multibox(tmp: Path):
    from proposals.multibox import build_multibox, kmeans_priors

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2000, 2, generator=g) * 0.7
    boxes = torch.cat([xy, xy + torch.rand(2000, 2, generator=g) * 0.3 + 0.02], 1).clamp(max=1)
    model = build_multibox(kmeans_priors(boxes, 800))
    return model.eval()


def zero_shot_classifier():
    """The zero-shot classifier of ``detect run`` without --weights, on random ImageNet-shaped weights."""
    from backbone.weights import googlenet
    from detect.classifier import ZeroShotClassifier
    from detect.zeroshot import load_zeroshot_map

    torch.manual_seed(0)
    model = googlenet(variant="torchvision", num_classes=1000, aux_logits=False)
    return ZeroShotClassifier(model.eval(), load_zeroshot_map(), source="random (zero-shot layout)")


def run_mode(mode: str, images: list[Path], model_paths: list[str], device: str, workers: int,
             batch_size: int, compile: bool, *, zero_shot: bool = False, multibox: bool = True) -> dict:
    config = DetectorConfig(fast=(mode == "fast"), proposals="paper", batch_size=batch_size, compile=compile)
    members = model_paths[:1] if mode == "fast" else model_paths
    ensemble = Ensemble([zero_shot_classifier()]) if zero_shot else Ensemble.from_checkpoints(members)
    for member in ensemble.members:  # as detect.pipeline.load_detector (BatchNorm folded, conv+ReLU fused)
        prepare_for_inference_(member.model)
    mb = make_multibox(Path(tempfile.gettempdir())) if mode != "fast" and multibox else None
    detector = Detector(ensemble, config, multibox=mb, device=device)
    # warm-up on GPU: allocator, cuDNN autotuning, compilation (the worker pool start-up stays in the timing);
    # 3 images so that compiled models also see a second shape. The CPU needs none.
    if device != "cpu" or compile:
        list(detector.detect_paths(images[:3], workers=1))
    t0 = time.perf_counter()
    results = [r for r, _ in detector.detect_paths(images, workers=workers)]
    wall = time.perf_counter() - t0
    mean = lambda xs: statistics.fmean(xs)  # noqa: E731  (means: the stages add up to the wall time)
    dtype = autocast_dtype(detector.device, config.amp)
    return {
        "mode": mode + (" zero-shot" if zero_shot else "") + (" +MultiBox" if mb is not None else ""),
        "models": len(ensemble), "images": len(images), "dtype": "fp32" if dtype is None else "bf16",
        "proposals": mean([r.num_proposals for r in results]),
        "wall": wall / len(results),
        "proposals_s": mean([r.timing.proposals for r in results]),
        "classify_s": mean([r.timing.classify for r in results]),
        "nms_s": mean([r.timing.nms for r in results]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=["fast", "paper"], choices=["fast", "paper"])
    ap.add_argument("--models", type=int, default=6, help="ensemble size in paper mode (paper: 6)")
    ap.add_argument("--workers", type=int, default=1, help="selective-search worker processes")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--compile", action="store_true", help="torch.compile the classifiers (DetectorConfig.compile)")
    ap.add_argument("--image-dir", type=Path, default=None, help="default: ../shared/data/coco128/train2017")
    ap.add_argument("--photo", default=None, help="a scikit-image photo instead of coco128 (astronaut: the README's)")
    ap.add_argument("--zero-shot", action="store_true", help="the zero-shot ImageNet model (detect run, no --weights)")
    ap.add_argument("--no-multibox", action="store_true", help="paper mode without MultiBox (as without weights)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = coco128_images(args.images, args.image_dir, args.photo)
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_paths = [] if args.zero_shot else make_models(Path(tmp), args.models)
        for mode in args.modes:
            rows.append(run_mode(mode, images, model_paths, args.device, args.workers, args.batch_size,
                                 args.compile, zero_shot=args.zero_shot, multibox=not args.no_multibox))
            print(f"{mode} done", file=sys.stderr, flush=True)
    load_end = os.getloadavg()
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    where = args.photo or (args.image_dir or "coco128")
    print(f"\nDetector s/image on {where} ({dev}, torch {torch.__version__}, {args.workers} SS workers, "
          f"compile={args.compile}, batch {args.batch_size}; load average {load_start[0]:.1f} at start, "
          f"{load_end[0]:.1f} at end)\n")
    print("| mode | models | dtype | images | proposals/img | proposals s/img | classify s/img | NMS s/img | "
          "other s/img | wall s/img | crops/s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        other = r["wall"] - r["proposals_s"] - r["classify_s"] - r["nms_s"]  # decoding, start-up; < 0 if overlapped
        rate = r["proposals"] * r["models"] / r["classify_s"] if r["classify_s"] else float("nan")
        print(f"| {r['mode']} | {r['models']} | {r['dtype']} | {r['images']} | {r['proposals']:.0f} | "
              f"{r['proposals_s']:.2f} | {r['classify_s']:.2f} | {r['nms_s']:.3f} | {other:.2f} | "
              f"**{r['wall']:.2f}** | {rate:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
