"""Region-classification throughput: crops/s per model, ours vs a plain baseline, in one run.

Ours: the decoded image is moved to the device once; all crops are made there by the batched
``detect.crops.warp_regions`` (R-CNN warp, 16 px context); the GoogLeNet runs in inference mode with
channels_last and (optionally) bf16 autocast; conv+BatchNorm pairs are folded for inference.
Baseline: what a straightforward R-CNN port does: a Python loop of ``cv2.resize`` warps on the CPU,
stacked, copied to the device, ``torchvision.models.googlenet`` forward in fp32.

Both count crops from the same real photo and the same boxes, including the time to warp.

    python bench/classify.py                      # CPU: batch 64..256, fp32 (bf16 too where supported)
    python bench/classify.py --device cuda --crops 8192 --batch-sizes 64 128 256 512 1024 --compile

Prints a markdown table and the ratio ours / baseline per batch size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
import torchvision

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/proposals.py would shadow the package)

from backbone.fuse import fold_batchnorm_  # noqa: E402
from backbone.googlenet import googlenet  # noqa: E402
from detect.crops import warp_regions  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255


def random_boxes(n: int, w: int, h: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = (torch.rand(n, 2, generator=g) * 0.6 + 0.05) * torch.tensor([w, h])
    return torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1)


def baseline_crops(image: np.ndarray, boxes: torch.Tensor, size: int = 224, padding: int = 16) -> torch.Tensor:
    """R-CNN's warp done the plain way: per box, dilate for context, pad with the mean, cv2.resize."""
    h, w = image.shape[:2]
    mean = image.reshape(-1, 3).mean(0)
    scale = size / (size - 2 * padding)
    out = np.empty((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale, (y2 - y1) * scale
        X1, Y1, X2, Y2 = (int(round(v)) for v in (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        canvas = np.empty((max(1, Y2 - Y1), max(1, X2 - X1), 3), np.float32)
        canvas[:] = mean
        sx1, sy1, sx2, sy2 = max(0, X1), max(0, Y1), min(w, X2), min(h, Y2)
        if sx2 > sx1 and sy2 > sy1:
            canvas[sy1 - Y1:sy2 - Y1, sx1 - X1:sx2 - X1] = image[sy1:sy2, sx1:sx2]
        out[i] = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_LINEAR)
    t = torch.from_numpy(out).permute(0, 3, 1, 2)
    return (t - MEAN[:, None, None]) / STD[:, None, None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_baseline(model, image, boxes, batch, device) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(boxes), batch):
            crops = baseline_crops(image, boxes[i:i + batch]).to(device)
            model(crops)
    sync(device)
    return time.perf_counter() - t0


def run_ours(model, image_t, boxes_t, batch, device, dtype) -> float:
    mean, std = MEAN.to(device)[None, :, None, None], STD.to(device)[None, :, None, None]
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for i in range(0, len(boxes_t), batch):
            crops = warp_regions(image_t, boxes_t[i:i + batch], size=224, padding=16)
            crops = ((crops - mean) / std).contiguous(memory_format=torch.channels_last)
            model(crops)
    sync(device)
    return time.perf_counter() - t0


def run_warp_only(image_t, boxes_t, batch, device) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(boxes_t), batch):
            warp_regions(image_t, boxes_t[i:i + batch], size=224, padding=16)
    sync(device)
    return time.perf_counter() - t0


def run_model_only(model, crops, batch, device, dtype) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for i in range(0, len(crops), batch):
            model(crops[i:i + batch])
    sync(device)
    return time.perf_counter() - t0


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, cudnn autotune, compilation
    return statistics.median(fn() for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--crops", type=int, default=256, help="crops per measurement")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", nargs="*", default=None, metavar="MODE",
                    help="also try torch.compile on our model with these modes (default, reduce-overhead, "
                         "max-autotune, max-autotune-no-cudagraphs); no value = default")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline (when only comparing ours)")
    ap.add_argument("--split", action="store_true", help="also time warping alone and the model alone")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    image = skimage.data.astronaut()  # a real 512x512 photo
    boxes = random_boxes(args.crops, image.shape[1], image.shape[0])
    image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous().to(device)
    boxes_t = boxes.to(device)

    base_model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval().to(device)
    ours = googlenet(variant="torchvision", num_classes=1000, aux_logits=False).eval()
    ours.load_state_dict(base_model.state_dict(), strict=False)
    ours = fold_batchnorm_(ours).to(device).to(memory_format=torch.channels_last)
    # compiled variants are built afresh for every (batch, dtype): one compiled module reused across many
    # shapes and autocast states hits dynamo's recompile limit and silently falls back to eager
    modes = [] if args.compile is None else (args.compile or ["default"])

    def compiled(mode: str):
        torch._dynamo.reset()
        return torch.compile(ours, mode=None if mode == "default" else mode, dynamic=False)

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    for batch in args.batch_sizes:
        t_base = float("nan")
        if not args.no_baseline:
            t_base = timed(lambda: run_baseline(base_model, image, boxes, batch, device), args.repeats)
            rows.append(("baseline (cv2 loop + torchvision)", batch, "fp32", args.crops / t_base, 1.0))
        if args.split:
            t = timed(lambda: run_warp_only(image_t, boxes_t, batch, device), args.repeats)
            rows.append(("  warp only (ours)", batch, "fp32", args.crops / t, t_base / t))
            crops = torch.randn(len(boxes_t), 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
            for dname in args.dtypes:
                t = timed(lambda: run_model_only(ours, crops, batch, device, dtypes[dname]), args.repeats)
                rows.append(("  model only (ours)", batch, dname, args.crops / t, t_base / t))
            del crops
        for dname in args.dtypes:
            for name, model in [("ours", ours), *((f"ours+compile({m})", compiled(m)) for m in modes)]:
                t = timed(lambda: run_ours(model, image_t, boxes_t, batch, device, dtypes[dname]), args.repeats)
                rows.append((name, batch, dname, args.crops / t, t_base / t))
        print(f"batch {batch} done", file=sys.stderr, flush=True)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\nRegion classification, {args.crops} crops of a 512x512 photo, {dev_name}, torch {torch.__version__}\n")
    print("| method | batch | dtype | crops/s | x baseline |")
    print("|---|---:|---|---:|---:|")
    for name, batch, dname, rate, ratio in rows:
        print(f"| {name} | {batch} | {dname} | {rate:,.0f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
