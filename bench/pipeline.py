"""End-to-end detector speed: s/image for `--fast` mode and the full paper mode, with the stage split.

Paper mode = selective search (fast strategies, superpixel scale 2) + 200 MultiBox boxes, deduplicated,
classified by an ensemble of 6 GoogLeNet region classifiers (200 classes + background), per-class NMS.
Fast mode = one model, single-strategy selective search, at most 300 proposals.

Model weights do not change speed, so the checkpoints are made here with random initialisation
(torchvision variant, 201 outputs; MultiBox with k-means priors of coco128's boxes).

    python bench/pipeline.py --device cpu --images 4 --modes fast          # CPU fast mode
    python bench/pipeline.py --device cpu --images 1 --modes paper         # CPU paper mode (minutes)
    python bench/pipeline.py --device cuda --images 32 --workers 14        # GPU, proposals overlapped

Wall s/image is the throughput over the whole run (on GPU after three warm-up images); with --workers > 1 the
selective search of upcoming images runs in worker processes while the current image is classified,
so wall time can be below the sum of the stages (the split shows per-image stage times).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repo, not bench/ (bench/proposals.py would shadow the package)

from detect.classifier import Ensemble, RegionClassifier  # noqa: E402
from detect.pipeline import Detector, DetectorConfig  # noqa: E402


def coco128_images(n: int, folder: Path | None = None) -> list[Path]:
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


def run_mode(mode: str, images: list[Path], model_paths: list[str], device: str, workers: int,
             batch_size: int, compile: bool) -> dict:
    config = DetectorConfig(fast=(mode == "fast"), proposals="paper", batch_size=batch_size, compile=compile)
    members = model_paths[:1] if mode == "fast" else model_paths
    multibox = None if mode == "fast" else make_multibox(Path(tempfile.gettempdir()))
    detector = Detector(Ensemble.from_checkpoints(members), config, multibox=multibox, device=device)
    # warm-up on GPU: allocator, cuDNN autotuning, compilation (the worker pool start-up stays in the timing);
    # 3 images so that compiled models also see a second shape. The CPU needs none.
    if device != "cpu" or compile:
        list(detector.detect_paths(images[:3], workers=1))
    t0 = time.perf_counter()
    results = [r for r, _ in detector.detect_paths(images, workers=workers)]
    wall = time.perf_counter() - t0
    med = lambda xs: statistics.median(xs)  # noqa: E731
    return {
        "mode": mode, "models": len(members), "images": len(images),
        "proposals": med([r.num_proposals for r in results]),
        "wall": wall / len(results),
        "proposals_s": med([r.timing.proposals for r in results]),
        "classify_s": med([r.timing.classify for r in results]),
        "nms_s": med([r.timing.nms for r in results]),
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
    args = ap.parse_args(argv)
    images = coco128_images(args.images, args.image_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_paths = make_models(Path(tmp), args.models)
        for mode in args.modes:
            rows.append(run_mode(mode, images, model_paths, args.device, args.workers, args.batch_size,
                                 args.compile))
            print(f"{mode} done", file=sys.stderr, flush=True)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nDetector s/image on coco128 ({dev}, torch {torch.__version__}, {args.workers} SS workers, "
          f"compile={args.compile}, batch {args.batch_size})\n")
    print("| mode | models | images | proposals/img | wall s/img | proposals s | classify s | NMS s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['models']} | {r['images']} | {r['proposals']:.0f} | {r['wall']:.2f} | "
              f"{r['proposals_s']:.2f} | {r['classify_s']:.2f} | {r['nms_s']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
