"""`backbone train`: train GoogLeNet on an ImageFolder tree with the paper's recipe (section 6).

Data: the ImageNet layout, ``DIR/<class>/<image>``; the class names are the sorted subfolder names.
Recipe: SGD momentum 0.9, learning rate x0.96 every 8 epochs, Polyak averaging of the weights for the
final model, random crops of 8-100 % of the image area with aspect ratio 3/4-4/3, photometric
distortions, random interpolation, mirroring, auxiliary losses weighted 0.3 (section 5).

Writes to ``--out``: ``model.pt`` (the averaged weights as a checkpoint with class names and
preprocessing; use it with ``backbone eval``/``classify``), ``last.pt`` (resumable state),
``log.jsonl`` (one line per epoch: loss, acc, lr, images_per_s, val_top1 ...), the same as ``metrics.csv``,
``curves.png`` (loss, accuracy, validation vs epoch) and ``config.json``. With ``--val DIR``, after every
epoch the averaged weights are scored on DIR exactly as ``backbone eval --crops 1`` scores ``model.pt``
(centre crop of the image resized to the checkpoint's size), and ``best.pt`` (same format as ``model.pt``)
holds the epoch with the highest top-1.
Several GPUs: ``torchrun --nproc_per_node 8 -m backbone train ...`` (``--batch-size`` is the global batch).
A corrupt image stops training with its file name.

Examples::

    backbone train --data imagenet/train --out runs/g1                      # the paper's recipe
    backbone train --data imagenet/train --out runs/g1 --resume             # continue after a crash
    backbone train --data imagenet/train --val imagenet/val --out runs/g1    # top-1/top-5 per epoch, best.pt
    backbone train --data crops --image-size 64 --epochs 20 --batch-size 32 --polyak 0.99 --out runs/small
    backbone train --data birds --weights imagenet --variant torchvision --lr 0.001 --out runs/birds
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backbone.config import VARIANTS, GoogLeNetConfig, TrainConfig
from backbone.errors import InputError

if TYPE_CHECKING:  # torch and the modules that import it load when the command runs, not for --help
    import torch
    from torch import Tensor, nn

    from backbone.googlenet import GoogLeNet
    from backbone.preprocess import Preprocessing

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--data", required=True, metavar="DIR", help="ImageFolder tree DIR/<class>/<image>")
    parser.add_argument("--out", default="runs/backbone", metavar="DIR", help="output folder (default %(default)s)")
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="GoogLeNet variant (default: paper, or the --weights' variant)")
    parser.add_argument("--weights", default=None, metavar="INIT",
                        help="initial weights: 'imagenet', a checkpoint or a state dict (classifier reset "
                             "when the class count differs)")
    parser.add_argument("--image-size", type=int, default=224, help="network input, pixels (default 224)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (all processes)")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--momentum", type=float, default=d.momentum)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--lr-decay", type=float, default=d.lr_decay, help="lr factor (default 0.96, section 6)")
    parser.add_argument("--lr-decay-every", type=int, default=d.lr_decay_every, metavar="EPOCHS")
    parser.add_argument("--polyak", type=float, default=d.polyak,
                        help="EMA decay per step of the averaged final weights; 0 = off (default %(default)s: "
                             "averages ~10,000 steps; use e.g. 0.99 for short runs)")
    parser.add_argument("--workers", type=int, default=d.workers, help="data loading processes")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d.amp,
                        help="bf16 autocast on CUDA (default on)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last)
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="STEPS")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (mid-epoch)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--log-every", type=int, default=d.log_every, metavar="STEPS")
    val = parser.add_argument_group("validation")
    val.add_argument("--val", default=None, metavar="DIR",
                     help="ImageFolder tree of held-out images (class folders named as in --data): top-1/top-5 "
                          "after every epoch, 1 centre crop as 'backbone eval --crops 1'; best.pt = the epoch "
                          "with the best top-1 (default: none)")


class _ClassifierLoss:
    """``loss_fn`` for the engine: the paper's loss with auxiliary heads (x0.3) and top-1 accuracy."""

    def __init__(self, channels_last: bool) -> None:
        import torch

        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device):
        from backbone.googlenet import googlenet_loss

        images, labels = batch
        images = images.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels = labels.to(device, non_blocking=True)
        outputs = model(images)  # TrainOutputs (logits, aux1, aux2) via MethodAsForward(..., "forward_train")
        loss = googlenet_loss(outputs, labels)
        return loss, {"acc": (outputs.logits.argmax(dim=1) == labels).float().mean()}


class CentreCropValidation:
    """The engine's ``validate``: top-1/top-5 of the model on labelled images with ``backbone eval``'s
    1-crop path (:func:`backbone.multicrop.evaluate_multicrop`, the checkpoint's preprocessing).

    Scores a copy of the network, so the trained one keeps its memory format and device.
    """

    def __init__(self, samples: list[tuple[Path, int]], preprocessing: Preprocessing, *, batch_size: int,
                 workers: int, amp: bool) -> None:
        self.samples, self.preprocessing = samples, preprocessing
        self.batch_size, self.workers, self.amp = batch_size, workers, amp

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        from backbone.engine import MethodAsForward
        from backbone.multicrop import evaluate_multicrop

        net = copy.deepcopy(model.module if isinstance(model, MethodAsForward) else model)
        device = next(net.parameters()).device
        result = evaluate_multicrop([net], [self.preprocessing], self.samples, crops=1, batch_size=self.batch_size,
                                    workers=self.workers, device=device, amp=self.amp)
        return {"top1": result.top1, "top5": result.top5}


def _initial_model(args: argparse.Namespace, num_classes: int) -> GoogLeNet:
    from backbone.checkpoint import is_checkpoint, read_torch_file
    from backbone.weights import googlenet

    if args.weights is None:
        return googlenet(variant=args.variant or "paper", num_classes=num_classes)
    if args.weights != "imagenet":
        obj = read_torch_file(args.weights)
        if is_checkpoint(obj) and obj.get("num_classes") != num_classes:
            model = googlenet(variant=args.variant, weights=args.weights)
            log.info("%s: %s classes -> new classifier with %d", args.weights, obj.get("num_classes"), num_classes)
            model.reset_classifier(num_classes)
            return model
    return googlenet(variant=args.variant, weights=args.weights, num_classes=num_classes)


def _resumed_model(out: Path, classes: list[str]) -> GoogLeNet:
    """The model a run in ``out`` trains (weights come from last.pt in the engine)."""
    from backbone.checkpoint import read_torch_file
    from backbone.googlenet import GoogLeNet

    last = out / "last.pt"
    state = read_torch_file(last)
    meta = state.get("meta", {}) if isinstance(state, dict) else {}
    if "model_config" not in meta:
        raise InputError(last, "not a 'backbone train' checkpoint (no model_config in its meta)")
    trained = list(meta.get("class_names", []))
    if trained != classes:
        def show(names: list[str]) -> str:
            return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
        raise InputError(last, f"was trained on {len(trained)} classes ({show(trained)}) but --data has "
                               f"{len(classes)} class folders ({show(classes)}); resume with the same data")
    return GoogLeNet(GoogLeNetConfig.from_dict(meta["model_config"]))


def main(args: argparse.Namespace) -> int:
    from backbone import engine
    from backbone.augment import AugmentConfig, TrainTransform
    from backbone.checkpoint import save_checkpoint
    from backbone.engine import MethodAsForward, TrainResult, seed_everything
    from backbone.folder import ImageFolder
    from backbone.preprocess import Preprocessing

    out = Path(args.out)
    if args.image_size < 32:
        raise InputError(None, f"--image-size {args.image_size}: GoogLeNet needs at least 32 pixels")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                         weight_decay=args.weight_decay, lr_decay=args.lr_decay, lr_decay_every=args.lr_decay_every,
                         polyak=args.polyak, amp=args.amp, channels_last=args.channels_last, workers=args.workers,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
                         log_every=args.log_every)
    preprocessing = Preprocessing(resize=round(args.image_size * 256 / 224), crop=args.image_size)
    augment = AugmentConfig(size=args.image_size)
    dataset = ImageFolder(args.data, TrainTransform(augment, preprocessing))
    classes = dataset.classes
    if args.resume:
        if not (out / "last.pt").exists():
            raise InputError(out / "last.pt", "no checkpoint to resume from (train without --resume first)")
        model = _resumed_model(out, classes)
    else:
        seed_everything(args.seed)
        model = _initial_model(args, len(classes))
    if model.aux1 is None:
        log.warning("the model has no auxiliary classifiers: training without the section-5 auxiliary losses")
    meta: dict[str, Any] = {"task": "backbone", "variant": model.variant, "class_names": classes,
                            "preprocessing": preprocessing.to_dict(), "model_config": model.config.to_dict(),
                            "augment": augment.to_dict(), "data": str(args.data), "init": args.weights}

    def save_final(final: nn.Module, path: Path) -> None:
        net = final.module if isinstance(final, MethodAsForward) else final
        save_checkpoint(path, net, class_names=classes, preprocessing=preprocessing,
                        config={"train": config.to_dict(), "augment": augment.to_dict(), "data": str(args.data),
                                "init": args.weights})

    validate = None
    if args.val is not None:
        val_set = ImageFolder(args.val, class_names=classes, classes_from=f"--data {args.data}")
        validate = CentreCropValidation(val_set.samples, preprocessing, batch_size=args.batch_size,
                                        workers=args.workers, amp=args.amp)
        log.info("validating on %d images of %s after every epoch (1 centre crop; best.pt by top-1)",
                 len(val_set.samples), args.val)
        meta["val"] = str(args.val)
    log.info("training the %s GoogLeNet on %d images of %d classes from %s", model.variant, len(dataset),
             len(classes), args.data)
    result: TrainResult = engine.train(MethodAsForward(model, "forward_train"), dataset, _ClassifierLoss(args.channels_last),
                                config, out, resume=args.resume, meta=meta, save_final=save_final,
                                validate=validate, best_metric="top1", sample_unit=("images", 1))
    last = result.history[-1] if result.history else {}
    keys = ("loss", "acc", "images_per_s", "val_top1", "val_top5")
    summary = ", ".join(f"{k} {last[k]:.4g}" for k in keys if k in last)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.model_path}: {result.epochs} epochs, {result.global_step} steps"
              + (f"; last epoch {summary}" if summary else ""))
        if result.best is not None:
            print(f"{result.best_path}: epoch {result.best['epoch']}, {result.best['metric']} "
                  f"{result.best['value']:.4g}")
    return 0

