"""A tiny, fast training task for the engine tests (and their subprocess workers).

``TinyNet`` has no BatchNorm (so a 2-process run with the same global batch equals a 1-process run);
``NoisyDigits`` draws its augmentation noise from torch's global generator, which the engine seeds per
item, so any dependence on worker count or resume point would show up in the final weights.

Run as a script it trains into ``OUT`` (used to SIGKILL a run and to run under torchrun)::

    python tests/backbone/_engine_tasks.py OUT [--resume] [--item-delay S] [--epochs E] [--dropout P]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from backbone.engine import TrainConfig, seed_everything, train


class TinyNet(nn.Module):
    """conv 3x3 -> ReLU -> global average -> dropout -> linear; input N x 3 x 8 x 8."""

    def __init__(self, num_classes: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv(x))           # N x 8 x 8 x 8
        x = x.mean(dim=(2, 3))                  # N x 8
        return self.fc(self.drop(x))            # N x K


class NoisyDigits(Dataset):
    """``n`` items ``(Tensor[3, 8, 8], label)``: a class-dependent pattern plus per-item random noise."""

    def __init__(self, n: int = 48, num_classes: int = 3, item_delay: float = 0.0, bad_index: int | None = None):
        self.n, self.num_classes, self.item_delay, self.bad_index = n, num_classes, item_delay, bad_index
        g = torch.Generator().manual_seed(1234)
        self.patterns = torch.randn(num_classes, 3, 8, 8, generator=g)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if self.item_delay:
            time.sleep(self.item_delay)
        if index == self.bad_index:
            from backbone.errors import InputError
            raise InputError(f"item{index}.jpg", "not a readable image (corrupt, truncated or unsupported format)")
        label = index % self.num_classes
        noise = torch.randn(3, 8, 8)           # from the generator the engine seeded for this (epoch, index)
        return self.patterns[label] + 0.5 * noise, label


def classification_loss(model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device):
    images, labels = (t.to(device) for t in batch)
    logits = model(images)
    loss = nn.functional.cross_entropy(logits, labels)
    return loss, {"acc": (logits.argmax(1) == labels).float().mean()}


def tiny_config(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=8, lr=0.1, polyak=0.9, workers=0, checkpoint_every=2,
                device="cpu", channels_last=False, log_every=2, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def run(out: str, *, resume: bool = False, item_delay: float = 0.0, epochs: int = 3, dropout: float = 0.0,
        workers: int = 0, n: int = 48):
    seed_everything(0)
    model = TinyNet(dropout=dropout)
    return train(model, NoisyDigits(n, item_delay=item_delay), classification_loss,
                 tiny_config(epochs=epochs, workers=workers), out, resume=resume)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--item-delay", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dropout", type=float, default=0.0)
    a = p.parse_args()
    run(a.out, resume=a.resume, item_delay=a.item_delay, epochs=a.epochs, dropout=a.dropout)
    sys.exit(0)
