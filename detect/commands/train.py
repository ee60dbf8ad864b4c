"""`detect train`: fine-tune a region classifier (GoogLeNet, K+1 outputs) on labelled proposals.

Section 8 of the paper, the R-CNN way: proposals with IoU >= 0.5 to a ground-truth box are positives of
its class, the rest background; batches of 32 positives + 96 background; softmax + auxiliary losses
(section 5); SGD with momentum, step decay and Polyak averaging (the shared training loop). Train several
with different --seed (and sampling options) for the paper's ensemble, then
`detect run --weights a.pt b.pt ...`.

Examples:
  detect train --annotations ann.json --images imgs/ --out runs/rc1                  # SS proposals, ImageNet init
  detect train --annotations ann.json --images imgs/ --proposals-cache cache/ss-3f2a9c01b7de --out runs/rc2 --seed 2
  detect train --annotations ann.json --images imgs/ --proposals paper --multibox-weights mb.pt --out runs/rc3
  detect train --annotations ann.json --images imgs/ --weights none --crop-size 48 --padding 3 \\
      --fg-iou 0.8 --near-background 0.5 --out runs/s  # from scratch (lr 0.01, no Polyak; README: from scratch)
  detect train ... --out runs/rc1 --resume                                          # continue a killed run
  detect train --annotations train.json --images train/ --val-annotations val.json --val-images val/ --out runs/rc1
  detect train --annotations ann.json --images imgs/ --val-fraction 0.1 --out runs/rc1   # hold out 10 % of images
  torchrun --nproc-per-node 8 -m detect train --annotations ann.json --images imgs/ --out runs/rc1

Writes OUT/model.pt (the region-classifier checkpoint: weights, class names, category ids, preprocessing,
crop settings), OUT/last.pt (resumable), OUT/config.json, OUT/log.jsonl (one line per epoch; throughput as
regions_per_s, the engine's samples being groups of regions) and the same as OUT/metrics.csv and
OUT/curves.png. --batch-size counts regions; config.json states it as batch.regions_per_batch beside
batch.samples_per_batch (= train.batch_size, in groups).

Validation (--val-annotations, or --val-fraction of the training images, which are then not trained on):
after every epoch the averaged classifier runs as the detector of `detect eval --weights` (selective
search "fast" at superpixel scale 2, computed once into OUT/proposals, then warps, softmax, per-class NMS)
on the validation images, scored with COCO's metric (val_AP, val_AP50) for COCO ground truth or the ILSVRC
devkit's (val_mAP) for XML; OUT/best.pt (same format as model.pt) holds the epoch with the best AP50 (mAP).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from backbone.errors import InputError
from detect.config import CropConfig, RegionSamplingConfig

log = logging.getLogger(__name__)

#: learning rate and Polyak decay when fine-tuning from weights (R-CNN) and when training from scratch
#: (--weights none: measured on bench/learnability.py's shapes, see README "Learning from scratch")
FINE_TUNE_LR, FINE_TUNE_POLYAK = 0.001, 0.999
SCRATCH_LR, SCRATCH_POLYAK = 0.01, 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    crop, rs = CropConfig(), RegionSamplingConfig()  # the defaults shown are the configs' (detect/config.py)
    data = parser.add_argument_group("data")
    data.add_argument("--annotations", required=True, type=Path,
                      help="COCO instances JSON, or a folder of VOC/ILSVRC XML files")
    data.add_argument("--images", required=True, type=Path, help="folder of the images")
    src = data.add_mutually_exclusive_group()
    src.add_argument("--proposals-cache", type=Path, default=None, metavar="DIR",
                     help="a proposal cache folder (from 'detect proposals'; one entry per image id)")
    src.add_argument("--proposals", choices=["ss", "paper", "jitter"], default="ss",
                     help="compute proposals (cached under OUT/proposals, resumable): ss = selective search "
                          "fast mode, paper = SS x2 + MultiBox, jitter = boxes around the ground truth "
                          "(a quick stand-in, not the paper's) (default: %(default)s)")
    data.add_argument("--multibox-weights", type=Path, default=None, help="MultiBox checkpoint for --proposals paper")
    data.add_argument("--max-images", type=int, default=None, help="use only the first N images")

    model = parser.add_argument_group("model")
    model.add_argument("--weights", default="imagenet", metavar="imagenet|PATH|none",
                       help="backbone initialisation: torchvision's ImageNet GoogLeNet, a backbone checkpoint, "
                            "or none (random) (default: %(default)s)")
    model.add_argument("--variant", choices=["paper", "torchvision"], default=None,
                       help="GoogLeNet variant (default: torchvision for imagenet and for none — its BatchNorm "
                            "lets a random init learn in a few epochs —, the file's for a path)")
    model.add_argument("--crop-size", type=int, default=crop.size, help="warped region side in px (default: %(default)s)")
    model.add_argument("--padding", type=int, default=crop.padding,
                       help="context px at the warped size (default: %(default)s, R-CNN's)")

    sampling = parser.add_argument_group("region sampling (R-CNN defaults)")
    sampling.add_argument("--positives-fraction", type=float, default=rs.positives_fraction,
                          help="(default: %(default)s = R-CNN's 32 of 128)")
    sampling.add_argument("--fg-iou", type=float, default=rs.fg_iou, help="positive IoU (default: %(default)s)")
    sampling.add_argument("--bg-iou-low", type=float, default=rs.bg_iou_low, help="background IoU in [LOW, fg-iou)")
    sampling.add_argument("--background-from", choices=["image", "any"], default=rs.background_from,
                          help="background of a group from the positive's image or any image")
    sampling.add_argument("--no-mirror", action="store_true", help="no random horizontal flips")
    sampling.add_argument("--near-background", type=float, default=rs.near_background_fraction, metavar="F",
                          help="share of background regions drawn from those overlapping an object by IoU in "
                               "[0.1, fg-iou): parts and loose boxes, which teaches the classifier to prefer tight "
                               "boxes (default: %(default)s = R-CNN's uniform draw)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=10, help="passes over the positives (default: 10)")
    opt.add_argument("--batch-size", type=int, default=128, help="regions per SGD step (R-CNN: 128)")
    opt.add_argument("--lr", type=float, default=None,
                     help=f"learning rate (default: {FINE_TUNE_LR} = R-CNN's fine-tuning rate when starting from "
                          f"weights; {SCRATCH_LR} with --weights none, where {FINE_TUNE_LR} barely moves a random "
                          "init in a few epochs)")
    opt.add_argument("--lr-schedule", choices=["step", "cosine"], default="step",
                     help="step: the paper's 4%% decay every 8 epochs; cosine: from --lr down to 0 over the run, "
                          "step by step (default: %(default)s; cosine measured worse on the short from-scratch "
                          "runs of README 'Learning from scratch')")
    opt.add_argument("--warmup", type=int, default=0, metavar="STEPS",
                     help="linear learning-rate warm-up from lr / 100 over the first STEPS steps (default: %(default)s)")
    opt.add_argument("--weight-decay", type=float, default=5e-4, help="R-CNN's (default: 5e-4)")
    opt.add_argument("--polyak", type=float, default=None,
                     help=f"EMA decay per step for the final weights (section 6); 0 = off (default: {FINE_TUNE_POLYAK} "
                          "from weights; 0 with --weights none, whose short runs change too fast to average)")
    opt.add_argument("--seed", type=int, default=0, help="order, background draw, flips, dropout")
    opt.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    opt.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    opt.add_argument("--checkpoint-every", type=int, default=500, help="steps between resumable checkpoints")
    opt.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    opt.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    opt.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--out", type=Path, default=Path("runs/region_classifier"), help="output folder")

    val = parser.add_argument_group("validation (after every epoch, as 'detect eval --weights'; best.pt by AP50)")
    held_out = val.add_mutually_exclusive_group()
    held_out.add_argument("--val-annotations", type=Path, default=None, metavar="GT",
                          help="held-out ground truth, same classes as --annotations: COCO JSON or folder of "
                               "VOC/ILSVRC XML (default: none)")
    held_out.add_argument("--val-fraction", type=float, default=None, metavar="F",
                          help="hold out this fraction of the training images instead; they are not trained on "
                               "(default: none)")
    val.add_argument("--val-images", type=Path, default=None, metavar="DIR",
                     help="image folder of --val-annotations (default: as the annotations say)")
    val.add_argument("--val-fast", action="store_true",
                     help="validate as 'detect eval --fast' (single-strategy selective search, at most 300 "
                          "proposals per image): much cheaper on a CPU (default: off, the paper's mode)")
    val.add_argument("--val-seed", type=int, default=0,
                     help="which images --val-fraction holds out; apart from --seed, so the members of an "
                          "ensemble share one split (default: %(default)s)")


def _proposals(args: argparse.Namespace, records: list) -> list:
    """One ``Tensor[P, 4]`` per record, from a cache folder, computed (and cached), or gt-jitter."""
    if args.proposals_cache is None and args.proposals == "jitter":
        from detect.regions import jitter_proposals

        return [jitter_proposals(r, seed=i) for i, r in enumerate(records)]
    from proposals.cache import build_cache, cache_dir, load_cached

    folder = args.proposals_cache
    if folder is None:
        from proposals.merge import ProposalMethod

        try:
            method = ProposalMethod(args.proposals, multibox_weights=None if args.multibox_weights is None
                                    else str(args.multibox_weights))
        except ValueError as err:
            raise InputError(None, str(err)) from None
        folder = cache_dir(args.out / "proposals", method)
        summary = build_cache(records, method, folder, workers=max(1, args.workers))
        log.info("proposals: %d images (%d computed) in %s", summary["images"], summary["computed"], folder)
    return [load_cached(folder, r.image_id).boxes for r in records]


def main(args: argparse.Namespace) -> int:
    from backbone.engine import TrainConfig, seed_everything, train
    from detect.classifier import RegionClassifier
    from detect.datasets import read_dataset
    from detect.regions import RegionDataset, RegionLoss, TrainView, collate_regions

    try:
        crop = CropConfig(size=args.crop_size, padding=args.padding)
        sampling = RegionSamplingConfig(fg_iou=args.fg_iou, bg_iou_low=args.bg_iou_low, bg_iou_high=args.fg_iou,
                                        positives_fraction=args.positives_fraction,
                                        background_from=args.background_from, mirror=not args.no_mirror,
                                        near_background_fraction=args.near_background)
    except ValueError as err:
        raise InputError(None, str(err)) from None
    dataset = read_dataset(args.annotations, args.images)
    records = dataset.records[: args.max_images] if args.max_images else dataset.records
    if not records:
        raise InputError(args.annotations, "no images to train on")
    records, val_set, val_info = _validation_set(args, dataset, records)
    weights = None if args.weights == "none" else args.weights
    variant = args.variant or ("torchvision" if weights in ("imagenet", None) else None)
    scratch = weights is None
    lr = args.lr if args.lr is not None else SCRATCH_LR if scratch else FINE_TUNE_LR
    polyak = args.polyak if args.polyak is not None else SCRATCH_POLYAK if scratch else FINE_TUNE_POLYAK
    if args.warmup < 0:
        raise InputError(None, f"--warmup must be >= 0 steps, not {args.warmup}")

    t0 = time.perf_counter()
    proposals = _proposals(args, records)
    log.info("proposals ready in %.1f s", time.perf_counter() - t0)
    seed_everything(args.seed)  # --seed decides the initial weights too (random init, or reset heads)
    classifier = RegionClassifier.from_backbone(dataset.class_names, variant=variant, weights=weights, crop=crop,
                                                category_ids=dataset.category_ids)
    p = classifier.preprocessing
    try:
        regions = RegionDataset(records, proposals, crop=crop, fill=[v * 255 for v in p.mean],
                                batch_size=args.batch_size, config=sampling)
    except ValueError as err:
        raise InputError(args.annotations, str(err)) from None
    regions_per_group = regions.pos_per_group + regions.bg_per_group
    validate = None if val_set is None else _validation(args, val_set)
    config = TrainConfig(epochs=args.epochs, batch_size=regions.groups_per_batch, lr=lr,
                         weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, warmup_steps=args.warmup,
                         polyak=polyak, amp=args.amp,
                         channels_last=args.channels_last, workers=args.workers,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device)
    run_config = {
        "annotations": str(args.annotations), "images": str(args.images), "kind": dataset.kind,
        "proposals": str(args.proposals_cache) if args.proposals_cache else args.proposals,
        "weights": args.weights, "variant": classifier.model.variant, "crop": crop.to_dict(),
        "sampling": sampling.to_dict(), "regions_per_batch": args.batch_size,
        "region_stats": regions.stats(), "train": config.to_dict(),
        # the engine's batch (train.batch_size) counts groups: each group is one positive's image
        "groups_per_batch": regions.groups_per_batch, "regions_per_group": regions_per_group,
        "validation": val_info,
    }

    def save_final(view, path: Path) -> None:
        view.classifier.save(path, config=run_config)

    log.info("training on %s (%d positives, %d background regions in %d images) -> %s", args.annotations,
             *[regions.stats()[k] for k in ("positives", "background", "images")], args.out)
    result = train(TrainView(classifier), regions, RegionLoss(p.mean, p.std, channels_last=args.channels_last),
                   config, args.out, resume=args.resume, collate_fn=collate_regions, meta=run_config,
                   save_final=save_final, validate=validate,
                   best_metric=None if validate is None else validate.best_metric,
                   sample_unit=("regions", regions_per_group))
    last = result.history[-1] if result.history else {}
    log.info("done: %d epochs, %d steps; final loss %s -> %s", result.epochs, result.global_step,
             f"{last.get('loss', float('nan')):.4g}", result.model_path)
    if result.best is not None:
        log.info("best: %s (epoch %d, %s %.4g)", result.best_path, result.best["epoch"], result.best["metric"],
                 result.best["value"])
    return 0


def _validation_set(args: argparse.Namespace, dataset, records: list) -> tuple[list, object, dict | None]:
    """``(training records, validation DetectionDataset or None, what config.json records about it)``."""
    from detect.datasets import read_dataset
    from detect.validation import split_records, subset

    if args.val_images is not None and args.val_annotations is None:
        raise InputError(args.val_images, "--val-images needs --val-annotations")
    if args.val_fraction is not None:
        try:
            records, held_out = split_records(records, args.val_fraction, seed=args.val_seed)
        except ValueError as err:
            raise InputError(None, str(err)) from None
        ids = [str(r.image_id) for r in held_out]
        info = {"source": "--val-fraction", "fraction": args.val_fraction, "seed": args.val_seed,
                "images": len(ids), "image_ids": ids}
        _check_resumed_split(args, info)
        return records, subset(dataset, held_out), info
    if args.val_annotations is None:
        return records, None, None
    val_set = read_dataset(args.val_annotations, args.val_images)
    if not val_set.records:
        raise InputError(args.val_annotations, "no images to validate on")
    if [str(c) for c in val_set.category_ids] != [str(c) for c in dataset.category_ids]:
        raise InputError(args.val_annotations, f"its {val_set.num_classes} classes differ from the "
                                               f"{dataset.num_classes} of {args.annotations} (in number or order)")
    return records, val_set, {"source": str(args.val_annotations), "images": len(val_set.records)}


def _check_resumed_split(args: argparse.Namespace, info: dict) -> None:
    """--resume must hold out the images the run held out (else it would train on other images)."""
    from backbone.checkpoint import read_torch_file

    last = args.out / "last.pt"
    if not args.resume or not last.exists():
        return
    state = read_torch_file(last)
    meta = state.get("meta") if isinstance(state, dict) else None
    saved = meta.get("validation") if isinstance(meta, dict) else None
    saved = saved if isinstance(saved, dict) else {}
    if saved.get("image_ids") != info["image_ids"]:
        raise InputError(last, f"was trained holding out other images ({saved.get('source', 'none')}, "
                               f"{saved.get('images', 0)} images); resume with its --val-fraction/--val-seed")


def _validation(args: argparse.Namespace, val_set):
    """The engine's ``validate``: proposals cached once under OUT/proposals (rank 0), detector + evaluator."""
    import os

    from detect.validation import DetectionValidation, cache_proposals, validation_config

    config = validation_config(fast=args.val_fast)
    if int(os.environ.get("RANK", "0")) == 0:  # only rank 0 validates
        folder = cache_proposals(val_set.records, args.out / "proposals", config, workers=args.workers)
    else:
        from detect.validation import proposal_method
        from proposals.cache import cache_dir

        folder = cache_dir(args.out / "proposals", proposal_method(config))
    validate = DetectionValidation(val_set, folder, config=config)
    log.info("validating on %d images after every epoch (%s metric; best.pt by %s)", len(val_set.records),
             validate.metric, validate.best_metric)
    return validate
