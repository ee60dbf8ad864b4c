"""The backbone's configuration dataclasses, torch-free, so the console scripts can build their parsers
(and show these defaults in ``--help``) without importing torch.

:class:`GoogLeNetConfig` configures :mod:`backbone.googlenet` (section 5, Table 1) and
:class:`TrainConfig` configures :mod:`backbone.engine` (section 6); both modules re-export them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

#: the two GoogLeNet layouts (see :mod:`backbone.googlenet`)
VARIANTS = ("paper", "torchvision")

#: Largest image accepted by default: 100 megapixels (about 300 MB decoded), checked from the header
#: before decoding (backbone.images); pass ``max_pixels`` (``--max-pixels``) to allow larger ones.
MAX_PIXELS = 100_000_000

#: file suffixes taken as images when a folder or glob is expanded (see backbone.inputs)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

#: crops per image of the multi-crop test (section 7): 1, 10 (corners + centre, mirrored) or 144
CROP_SCHEMES = (1, 10, 144)


@dataclass(frozen=True)
class GoogLeNetConfig:
    """Everything needed to rebuild a :class:`GoogLeNet` (stored in checkpoints as ``model_config``)."""

    variant: str = "paper"  # "paper" (Table 1) or "torchvision" (its layout and parameter names)
    num_classes: int = 1000  # ILSVRC 2012 classification (section 6)
    aux_logits: bool = True  # auxiliary classifiers on 4a and 4d (section 5); used in training only
    dropout: float | None = None  # None: 0.4 for paper (section 5), 0.2 for torchvision
    dropout_aux: float = 0.7  # section 5: "dropout layer with 70% ratio of dropped outputs"
    transform_input: bool | None = None  # None: True for torchvision (its ImageNet weights), False for paper

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown GoogLeNet variant {self.variant!r}; expected one of {VARIANTS}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.dropout is None:
            object.__setattr__(self, "dropout", 0.4 if self.variant == "paper" else 0.2)
        if self.transform_input is None:
            object.__setattr__(self, "transform_input", self.variant == "torchvision")
        if self.transform_input and self.variant == "paper":
            raise ValueError("transform_input belongs to the torchvision variant's ported weights")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GoogLeNetConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig:
    """The paper's recipe (section 6) as defaults; everything a training run needs besides its data."""

    epochs: int = 30                # ImageNet budget of our choice; the paper does not give one
    batch_size: int = 128           # GLOBAL batch (all ranks together); the paper's DistBelief batches are unknown
    lr: float = 0.01                # initial learning rate (Caffe's bvlc_googlenet replica; not in the paper)
    momentum: float = 0.9           # section 6: "asynchronous stochastic gradient descent with 0.9 momentum"
    weight_decay: float = 2e-4      # Caffe's bvlc_googlenet replica (the paper does not state it)
    lr_decay: float = 0.96          # section 6: "decreasing the learning rate by 4% ...
    lr_decay_every: int = 8         # ... every 8 epochs"
    lr_schedule: str = "step"       # "step" (the above, per epoch) or "cosine" (per step, from lr to 0 over the run)
    warmup_steps: int = 0           # linear warm-up from lr / 100 over this many first steps (0 = none)
    polyak: float = 0.9999          # section 6: Polyak averaging; EMA decay per step (0 = off, final = last)
    amp: bool = True                # autocast on CUDA (ignored on CPU)
    amp_dtype: str = "bfloat16"     # "bfloat16" (no loss scaling needed) or "float16" (with GradScaler)
    channels_last: bool = True      # NHWC memory format for the model (faster convs on GPUs)
    workers: int = 4                # DataLoader worker processes per rank
    checkpoint_every: int = 500     # steps between resumable checkpoints (plus one at each epoch end)
    seed: int = 0                   # sample order, augmentation and dropout randomness
    device: str = "auto"            # "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    log_every: int = 50             # steps between log lines

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
