"""Region-classification throughput: crops/s per model, ours vs a plain baseline, in one run.

Ours: the decoded image is moved to the device once; all crops are made there, already normalised, by
``detect.crops.iter_normalized`` (R-CNN warp, 16 px context, one roi_align); the GoogLeNet runs in inference
mode with conv+BatchNorm folded, conv+ReLU fused (``backbone.fuse.prepare_for_inference_``) and channels_last,
in fp32 or bf16 autocast, optionally ``torch.compile``d.
Baseline: what a straightforward R-CNN port does: a Python loop of ``cv2.resize`` warps on the CPU,
stacked, copied to the device, ``torchvision.models.googlenet`` forward in fp32.

Both count crops from the same real photo and the same boxes, including the time to warp. ``--variants``
adds our network step by step (NCHW, channels_last, BatchNorm folded, conv+ReLU fused) on the same crops. Every row of
ours gives the largest change of a class probability against the plain path (our crops, BatchNorm kept,
NCHW, fp32) over the first batch: "max dp".

Weights do not change speed, but they do change how far bf16 moves the probabilities: by default the
network is random with BatchNorm statistics of real crops and logits of std 4 (spread like a trained
model's); ``--weights imagenet`` takes torchvision's ImageNet file, ``--weights CKPT`` a region classifier
(its crop size is then used).

    python bench/classify.py --device cpu --threads 2 --variants --compile default --compile-timeout 600
    python bench/classify.py --device cuda --crops 8192 --batch-sizes 64 128 256 512 1024 --compile

Prints a markdown table and the ratio ours / baseline per batch size, with the load average.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
import torchvision
from torch import nn

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/proposals.py would shadow the package)

from backbone.fuse import fold_batchnorm_, prepare_for_inference_  # noqa: E402
from backbone.weights import googlenet  # noqa: E402
from detect.classifier import cpu_has_native_bf16  # noqa: E402
from detect.crops import CropConfig, iter_normalized  # noqa: E402

MEAN_01, STD_01 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MEAN = torch.tensor(MEAN_01) * 255
STD = torch.tensor(STD_01) * 255


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


def run_baseline(model, image, boxes, batch, device, crop: CropConfig = CropConfig()) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(boxes), batch):
            crops = baseline_crops(image, boxes[i:i + batch], crop.size, crop.padding).to(device)
            model(crops)
    sync(device)
    return time.perf_counter() - t0


def run_ours(model, image_t, boxes_t, batch, device, dtype, crop: CropConfig, fmt=torch.channels_last,
             keep: bool = False):
    """Seconds for all boxes (and the first batch's probabilities when ``keep``)."""
    first = None
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for crops in iter_normalized(image_t, boxes_t, crop=crop, mean=MEAN_01, std=STD_01, batch_size=batch):
            out = model(crops.contiguous(memory_format=fmt))
            if keep and first is None:
                first = torch.softmax(out.float(), dim=1).cpu()
    sync(device)
    return (time.perf_counter() - t0, first) if keep else time.perf_counter() - t0


def run_warp_only(image_t, boxes_t, batch, device, crop: CropConfig) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for crops in iter_normalized(image_t, boxes_t, crop=crop, mean=MEAN_01, std=STD_01, batch_size=batch):
            crops.contiguous(memory_format=torch.channels_last)
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


class CompileTimeout(Exception):
    pass


def within(seconds: int, fn):
    """``fn()``, or CompileTimeout after ``seconds`` (SIGALRM: main thread, POSIX; 0 = no limit)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        return fn()

    def alarm(signum, frame):
        raise CompileTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def calibrated_random(crops: torch.Tensor, seed: int = 0) -> nn.Module:
    """torchvision's GoogLeNet, random, with BatchNorm statistics of ``crops`` and logits of std 4.

    An uncalibrated random GoogLeNet outputs logits of 1e-12: every precision would agree trivially."""
    torch.manual_seed(seed)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(crops)
        model.eval()
        model.fc.weight.mul_(4.0 / model(crops).std())
    return model


def load_weights(spec: str | None, image_t: torch.Tensor, boxes: torch.Tensor) -> tuple[nn.Module, CropConfig, str]:
    """(torchvision-layout GoogLeNet in eval mode, crop settings, description) for ``--weights``."""
    if spec is None:
        crops = next(iter_normalized(image_t, boxes[-32:], mean=MEAN_01, std=STD_01, batch_size=32))
        return calibrated_random(crops), CropConfig(), "random, BatchNorm calibrated on 32 crops, logit std 4"
    if spec == "imagenet":
        from backbone.weights import imagenet_weights_path

        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
        model.load_state_dict(torch.load(imagenet_weights_path(), weights_only=True), strict=False)
        return model.eval(), CropConfig(), "torchvision ImageNet"
    from detect.classifier import RegionClassifier

    rc = RegionClassifier.load(spec)
    return rc.model.eval(), rc.crop, f"region classifier {spec}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--crops", type=int, default=256, help="crops per measurement")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", default=None, help="imagenet, a region-classifier checkpoint, or none: random")
    ap.add_argument("--variants", action="store_true",
                    help="also our network without folding / without channels_last (fp32)")
    ap.add_argument("--compile", nargs="*", default=None, metavar="MODE",
                    help="also try torch.compile on our model with these modes (default, reduce-overhead, "
                         "max-autotune, max-autotune-no-cudagraphs); no value = default")
    ap.add_argument("--compile-timeout", type=int, default=900,
                    help="seconds one compiled variant may take to compile and warm up (0 = no limit)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline (when only comparing ours)")
    ap.add_argument("--split", action="store_true", help="also time warping alone and the model alone")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    load_start = os.getloadavg()

    image = skimage.data.astronaut()  # a real 512x512 photo
    boxes = random_boxes(args.crops, image.shape[1], image.shape[0])
    image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous().to(device)
    boxes_t = boxes.to(device)

    base_model, crop, described = load_weights(args.weights, image_t.cpu(), boxes)
    base_model = base_model.to(device)
    plain = googlenet(variant="torchvision", num_classes=base_model.fc.out_features, aux_logits=False).eval()
    plain.load_state_dict(base_model.state_dict(), strict=False)
    plain = plain.to(device)
    ours = prepare_for_inference_(copy.deepcopy(plain)).to(memory_format=torch.channels_last)
    # the steps from the plain path to ours (same crops): name -> (model, memory format)
    nets = {"ours": (ours, torch.channels_last)}
    if args.variants:
        nets = {"  NCHW, BatchNorm kept": (plain, torch.contiguous_format),
                "  channels_last": (copy.deepcopy(plain).to(memory_format=torch.channels_last), torch.channels_last),
                "  BatchNorm folded, NCHW": (fold_batchnorm_(copy.deepcopy(plain)), torch.contiguous_format),
                "  BatchNorm folded, channels_last": (fold_batchnorm_(copy.deepcopy(plain)).to(
                    memory_format=torch.channels_last), torch.channels_last),
                **nets}
    # compiled variants are built afresh for every (batch, dtype): one compiled module reused across many
    # shapes and autocast states hits dynamo's recompile limit and silently falls back to eager
    modes = [] if args.compile is None else (args.compile or ["default"])

    def compiled(mode: str):
        torch._dynamo.reset()
        return torch.compile(ours, mode=None if mode == "default" else mode, dynamic=False)

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    for batch in args.batch_sizes:
        _, reference = run_ours(plain, image_t, boxes_t[:batch], batch, device, torch.float32, crop,
                                torch.contiguous_format, keep=True)
        t_base = float("nan")
        if not args.no_baseline:
            t_base = timed(lambda: run_baseline(base_model, image, boxes, batch, device, crop), args.repeats)
            rows.append(("baseline (cv2 loop + torchvision)", batch, "fp32", args.crops / t_base, 1.0, None))
        if args.split:
            t = timed(lambda: run_warp_only(image_t, boxes_t, batch, device, crop), args.repeats)
            rows.append(("  warp only (ours)", batch, "fp32", args.crops / t, t_base / t, None))
            crops = torch.randn(len(boxes_t), 3, crop.size, crop.size,
                                device=device).contiguous(memory_format=torch.channels_last)
            for dname in args.dtypes:
                t = timed(lambda: run_model_only(ours, crops, batch, device, dtypes[dname]), args.repeats)
                rows.append(("  model only (ours)", batch, dname, args.crops / t, t_base / t, None))
            del crops
        for dname in args.dtypes:
            dtype = dtypes[dname]
            runs = [(name, net, fmt) for name, (net, fmt) in nets.items() if dname == "fp32" or name == "ours"]
            runs += [(f"ours+compile({m})", None, m) for m in modes]
            for name, net, fmt in runs:
                started = time.perf_counter()
                try:
                    if net is None:  # compiled: the warm-up (compilation) is capped
                        net = compiled(fmt)
                        fmt = torch.channels_last
                        within(args.compile_timeout,
                               lambda: run_ours(net, image_t, boxes_t[:batch], batch, device, dtype, crop, fmt))
                except CompileTimeout:
                    rows.append((f"{name}: not compiled in {args.compile_timeout} s", batch, dname, float("nan"),
                                 float("nan"), None))
                    continue
                warm = time.perf_counter() - started
                _, probs = run_ours(net, image_t, boxes_t[:batch], batch, device, dtype, crop, fmt, keep=True)
                t = timed(lambda: run_ours(net, image_t, boxes_t, batch, device, dtype, crop, fmt), args.repeats)
                label = f"{name} (compiled in {warm:.0f} s)" if name.startswith("ours+compile") else name
                rows.append((label, batch, dname, args.crops / t, t_base / t, (probs - reference).abs().max().item()))
        print(f"batch {batch} done", file=sys.stderr, flush=True)

    load_end = os.getloadavg()
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU {torch.backends.cpu.get_cpu_capability()} x{torch.get_num_threads()} threads, native bf16 "
                     f"{'yes' if cpu_has_native_bf16() else 'no'}")
    print(f"\nRegion classification, {args.crops} crops ({crop.size} px) of a 512x512 photo, {dev_name}, "
          f"torch {torch.__version__}; weights: {described}; load average {load_start[0]:.1f} at start, "
          f"{load_end[0]:.1f} at end\n")
    print("| method | batch | dtype | crops/s | x baseline | max dp |")
    print("|---|---:|---|---:|---:|---:|")
    for name, batch, dname, rate, ratio, dp in rows:
        dp_text = "" if dp is None else f"{dp:.1e}"
        print(f"| {name} | {batch} | {dname} | {rate:,.1f} | {ratio:.2f} | {dp_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
