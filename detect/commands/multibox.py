"""`detect multibox`: train the MultiBox proposal network, or run it on images.

Examples:
  detect multibox train --annotations ann.json --images imgs/ --out runs/mb
  detect multibox train --annotations ann.json --images imgs/ --out runs/mb --variant torchvision --weights imagenet
  detect multibox train --annotations ann.json --images imgs/ --out runs/mb --resume      # continue a run
  detect multibox train --annotations train.json --images train/ --val-annotations val.json --val-images val/ \
      --out runs/mb                                       # recall@0.5 of the top 200 boxes per epoch, best.pt
  detect multibox train --annotations ILSVRC/Annotations/DET/train --images ILSVRC/Data/DET/train --out runs/mb
  detect multibox run photo.jpg --weights runs/mb/model.pt --show 10
  detect multibox run photos/ --weights runs/mb/model.pt --out boxes.json

`train` computes the priors (k-means of the training boxes, `--priors` of them), builds the GoogLeNet trunk
(`--variant`, initialised from `--weights`: `imagenet` or a backbone checkpoint) with the MultiBox head,
and trains with the shared engine (SGD + momentum, step decay, Polyak averaging; progress bar, resumable
`last.pt`, `torchrun` for several GPUs). The final model goes to OUT/model.pt: a backbone checkpoint of the
trunk plus priors, box head and input size, usable as `--weights` of `detect proposals` / `detect run`.
OUT also gets log.jsonl, metrics.csv and curves.png (one row / point per epoch). With `--val-annotations`,
after every epoch the averaged model's top 200 boxes per validation image are scored as `detect proposals
--gt` scores them (val_recall_50, val_recall_70, val_abo), and OUT/best.pt (same format as model.pt) holds
the epoch with the highest recall@0.5.
`run` prints the top boxes per image (and writes all `--top-k` of them as JSON with `--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from backbone.config import TrainConfig
from backbone.errors import InputError
from proposals.config import MultiBoxConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="multibox_command", required=True, metavar="{train,run}")
    t = sub.add_parser("train", help="train MultiBox on detection ground truth",
                       description="Train MultiBox (see 'detect multibox --help' for examples).")
    m, d = MultiBoxConfig(), TrainConfig()
    t.add_argument("--annotations", type=Path, required=True, help="COCO JSON file or folder of VOC/ILSVRC XML")
    t.add_argument("--images", type=Path, default=None, help="image folder of --annotations")
    t.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log, model.pt)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--variant", choices=["paper", "torchvision"], default=None,
                   help="GoogLeNet variant (default: paper; torchvision with --weights imagenet)")
    t.add_argument("--weights", default=None, help="trunk initialisation: 'imagenet' or a backbone checkpoint")
    t.add_argument("--priors", type=int, default=m.num_priors, help="number of priors K (default: %(default)s)")
    t.add_argument("--input-size", type=int, default=m.input_size, help="square input side (default: %(default)s)")
    t.add_argument("--alpha", type=float, default=m.alpha, help="location loss weight (default: %(default)s)")
    t.add_argument("--match-on", choices=["priors", "predictions"], default=m.match_on)
    t.add_argument("--no-flip", action="store_true", help="no random horizontal mirroring")
    t.add_argument("--limit", type=int, default=None, metavar="N", help="train on the first N images only")
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (default: %(default)s)")
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--polyak", type=float, default=d.polyak, help="EMA decay per step (0 = off)")
    t.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    t.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    v = t.add_argument_group("validation")
    v.add_argument("--val-annotations", type=Path, default=None, metavar="GT",
                   help="held-out ground truth (COCO JSON or folder of VOC/ILSVRC XML): recall@0.5 of the top "
                        "200 boxes per image after every epoch; best.pt = the epoch with the highest (default: none)")
    v.add_argument("--val-images", type=Path, default=None, metavar="DIR",
                   help="image folder of --val-annotations (default: as the annotations say)")

    r = sub.add_parser("run", help="top MultiBox boxes of images",
                       description="Run MultiBox (see 'detect multibox --help' for examples).")
    r.add_argument("inputs", nargs="+", metavar="IMAGE|DIR")
    r.add_argument("--weights", type=Path, required=True, help="MultiBox checkpoint (OUT/model.pt of train)")
    r.add_argument("--top-k", type=int, default=m.top_k, help="boxes kept per image (default: %(default)s)")
    r.add_argument("--nms-iou", type=float, default=None, help="optional NMS among the boxes")
    r.add_argument("--show", type=int, default=10, help="boxes printed per image (default: %(default)s)")
    r.add_argument("--out", type=Path, default=None, help="JSON file with all --top-k boxes per image")
    r.add_argument("--device", default="cpu")


def main(args: argparse.Namespace) -> int:
    return train_main(args) if args.multibox_command == "train" else run_main(args)


def train_main(args: argparse.Namespace) -> int:
    from backbone import engine
    from backbone.engine import seed_everything
    from detect.datasets import read_dataset
    from proposals.multibox import build_multibox, save_multibox
    from proposals.multibox_train import MultiBoxDataset, MultiBoxLoss, collate_multibox, priors_from_records

    for name in ("priors", "input_size", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(None, f"--{name.replace('_', '-')} must be >= 1")
    if args.input_size % 32:
        raise InputError(None, f"--input-size must be a multiple of 32 (the trunk's stride), got {args.input_size}")
    dataset = read_dataset(args.annotations, args.images)
    records = dataset.records[: args.limit] if args.limit else dataset.records
    validate = _validation(args)
    variant = args.variant or ("torchvision" if args.weights == "imagenet" else "paper")
    config = MultiBoxConfig(num_priors=args.priors, input_size=args.input_size, variant=variant, alpha=args.alpha,
                            match_on=args.match_on)
    if not records:
        raise InputError(args.annotations, "no images to train on")
    try:
        priors = priors_from_records(records, config.num_priors, seed=args.seed)
    except ValueError as err:
        raise InputError(args.annotations, str(err)) from None
    if priors.shape[0] < config.num_priors:
        log.warning("only %d distinct training boxes: using %d priors instead of %d", priors.shape[0],
                    priors.shape[0], config.num_priors)
    config = dataclasses.replace(config, num_priors=int(priors.shape[0]))
    if args.resume:
        _check_resume(args.out, config)
    seed_everything(args.seed)  # --seed decides the initial weights too (the box head is always random)
    model = build_multibox(priors, config, weights=None if args.resume else args.weights)
    train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               weight_decay=args.weight_decay, polyak=args.polyak, workers=args.workers,
                               checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
                               amp=not args.no_amp)
    data = MultiBoxDataset(records, input_size=config.input_size, preprocessing=model.preprocessing,
                           flip=not args.no_flip)
    run_info = {"multibox": config.to_dict(), "annotations": os.fspath(args.annotations),
                "images": None if args.images is None else os.fspath(args.images), "num_images": len(records),
                "init_weights": args.weights}
    if validate is not None:
        run_info.update({"val_annotations": os.fspath(args.val_annotations), "val_images": len(validate.records)})
    log.info("MultiBox: %d images, %d boxes, %d priors, %s trunk, input %d px", len(records),
             sum(int((~r.ignore.bool()).sum()) for r in records), config.num_priors, variant, config.input_size)

    def save_final(final_model, path: Path) -> None:
        save_multibox(path, final_model, config={"train": train_config.to_dict(), **run_info})

    result = engine.train(model, data, MultiBoxLoss(alpha=config.alpha, match_on=config.match_on), train_config, args.out,
                   resume=args.resume, collate_fn=collate_multibox, meta=run_info, save_final=save_final,
                   validate=validate, best_metric=None if validate is None else validate.best_metric,
                   sample_unit=("images", 1))
    if result.history:
        first, last = result.history[0], result.history[-1]
        log.info("loss %.4g (epoch %d) -> %.4g (epoch %d)", first["loss"], first["epoch"], last["loss"],
                 last["epoch"])
    print(f"MultiBox model: {result.model_path}")
    if result.best is not None:
        print(f"best: {result.best_path} (epoch {result.best['epoch']}, {result.best['metric']} "
              f"{result.best['value']:.4g})")
    return 0


def _validation(args: argparse.Namespace):
    """The engine's ``validate`` for --val-annotations (None without it)."""
    from detect.datasets import read_dataset
    from detect.validation import ProposalRecallValidation

    if args.val_annotations is None:
        if args.val_images is not None:
            raise InputError(args.val_images, "--val-images needs --val-annotations")
        return None
    val_set = read_dataset(args.val_annotations, args.val_images)
    if not val_set.records:
        raise InputError(args.val_annotations, "no images to validate on")
    log.info("validating on %d images of %s after every epoch (recall@0.5 of the top 200 boxes; best.pt by it)",
             len(val_set.records), args.val_annotations)
    return ProposalRecallValidation(val_set.records)


def _check_resume(out: Path, config: MultiBoxConfig) -> None:
    """Refuse ``--resume`` with MultiBox settings other than the run's (the engine checks its own)."""
    from backbone.checkpoint import read_torch_file

    last = out / "last.pt"
    if not last.exists():
        return  # the engine reports the missing checkpoint
    state = read_torch_file(last)
    meta = state.get("meta") if isinstance(state, dict) else None
    saved = meta.get("multibox") if isinstance(meta, dict) else None
    if saved is not None and not isinstance(saved, dict):
        raise InputError(last, "not a MultiBox training checkpoint (its meta.multibox is not a dict)")
    try:
        differs = saved is not None and MultiBoxConfig.from_dict(saved) != config
    except (TypeError, ValueError) as err:
        raise InputError(last, f"not a MultiBox training checkpoint ({str(err)[:200]})") from None
    if differs:
        diff = [k for k, v in config.to_dict().items() if saved.get(k) != v]
        raise InputError(last, f"was trained with other MultiBox settings ({', '.join(diff)}); "
                               "resume with the original --priors/--input-size/--variant/--alpha/--match-on")


def run_main(args: argparse.Namespace) -> int:
    from backbone.files import write_json
    from backbone.images import read_image
    from backbone.inputs import expand_inputs
    from detect.proposalfile import proposals_json
    from proposals.cache import as_items
    from proposals.multibox import load_multibox

    if args.top_k < 1 or args.show < 0:
        raise InputError(None, "--top-k must be >= 1 and --show >= 0")
    paths = expand_inputs(args.inputs)
    model = load_multibox(args.weights, device=args.device)
    entries = []
    for item in as_items(paths):
        props = model.propose(read_image(item.file), top_k=args.top_k, nms_iou=args.nms_iou)
        entries.append(proposals_json(item, item.image_id, props))
        if args.show:
            print(f"{item.file}: {len(props)} boxes")
            print(f"{'rank':>4}  {'score':>6}  {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}")
            for rank, (box, score) in enumerate(zip(props.boxes.tolist()[: args.show], props.scores.tolist()), 1):
                print(f"{rank:>4}  {score:6.3f}  " + " ".join(f"{v:7.1f}" for v in box))
    if args.out is not None:
        write_json(args.out, entries, inputs=[os.fspath(p) for p in paths] + [os.fspath(args.weights)])
        log.info("wrote %d images' boxes to %s", len(entries), args.out)
    return 0
