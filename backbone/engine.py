"""The training loop every trainer reuses: backbone classifier, region classifiers, MultiBox.

Paper, section 6 ("Training Methodology"): SGD with momentum 0.9, the learning rate decreased by 4% every
8 epochs, and Polyak averaging of the weights for the final model. The paper trained asynchronously on
DistBelief; we train synchronously (one process, or ``torchrun`` with DistributedDataParallel), which is
the one deliberate deviation.

The loop knows nothing of the task: a caller passes a ``Dataset``, an optional ``collate_fn`` and a
``loss_fn(model, batch, device) -> (loss, metrics)``. What it guarantees:

* Deterministic order: epoch ``e`` visits the samples in ``randperm(len(dataset))`` seeded from
  ``(seed, e)``; global batch ``i`` is positions ``[i*B, (i+1)*B)`` of it (the last, partial batch is
  dropped, so every step has the same size). Under ``torchrun`` rank ``r`` of ``W`` takes every ``W``-th
  position of each global batch, so the ranks together see exactly the single-process batch.
* Deterministic augmentation: before ``dataset[i]`` is read, torch's CPU generator, ``numpy.random`` and
  ``random`` are seeded from ``(seed, epoch, i)``, and before each step torch's generator is seeded from
  ``(seed, epoch, step, rank)`` (dropout). Results therefore do not depend on the number of workers or on
  where a run was resumed.
* Resumable: ``last.pt`` (written atomically every ``checkpoint_every`` steps and at each epoch end) holds
  model, averaged model, optimizer, scheduler, scaler, epoch and step within the epoch, config and
  ``meta``. ``resume=True`` skips the already-consumed batches of the same permutation, so a run killed
  with SIGKILL and resumed ends with the same weights as an uninterrupted one.
* Polyak averaging: an exponential moving average of parameters and buffers
  (``torch.optim.swa_utils.AveragedModel``), updated after each step; the final model is the average.
* Only rank 0 writes files and shows a progress bar; ``log.jsonl`` gets one JSON line per epoch, and
  ``metrics.csv`` and ``curves.png`` (:mod:`backbone.curves`) are rebuilt from it after every epoch.
* Validation (optional): after each epoch ``validate(model, epoch)`` runs on rank 0 on the model in its
  final form (the Polyak average when averaging is on), in eval mode and without gradients; its numbers
  go into the epoch record as ``val_<name>``. The random number generators (torch CPU and CUDA, numpy,
  ``random``) are saved before and restored after it, so a run with validation ends with bitwise the same
  weights, and leaves the same RNG state behind, as one without. When ``best_metric`` improves
  (strictly greater), ``best.pt`` is written by the same ``save_final`` as ``model.pt``; the best value
  is kept in ``last.pt``, so a resumed run compares against it.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from backbone.config import TrainConfig  # noqa: F401  (re-exported: defined torch-free)
from backbone.console import wants_progress
from backbone.curves import write_summaries
from backbone.device import resolve_device
from backbone.errors import InputError
from backbone.files import atomic_path

log = logging.getLogger(__name__)
#: What ``last.pt`` must hold for ``--resume`` (written by the engine's checkpointing).
_RESUME_KEYS = ("config", "model", "optimizer", "scheduler", "scaler", "epoch", "step", "global_step")

#: ``loss_fn(model, batch, device) -> (scalar loss, {"acc": ..., ...})``; metric values are floats or
#: 0-dim tensors and are averaged over the steps of an epoch (return the same keys at every step). ``model`` is the module to call (wrapped in
#: DistributedDataParallel under torchrun); the loss_fn moves the batch to ``device`` itself.
LossFn = Callable[[nn.Module, Any, torch.device], "tuple[Tensor, dict[str, float | Tensor]]"]

#: ``save_final(averaged_model, path)``: writes the final model file (rank 0 only); the default stores
#: ``{"model": state_dict, "config": ..., "meta": ...}``.
SaveFinal = Callable[[nn.Module, Path], None]

#: ``validate(model, epoch) -> {"AP50": 0.41, ...}``: numbers of the model (final form, eval mode, on the
#: training device) on held-out data after 1-based ``epoch``; rank 0 only. It must not modify the model
#: (copy it first to e.g. fold BatchNorm or change its memory format); it may use any randomness.
Validate = Callable[[nn.Module, int], "dict[str, float]"]

LAST = "last.pt"
FINAL = "model.pt"
BEST = "best.pt"
LOG = "log.jsonl"

# Config fields that may change on --resume without changing the result (epochs may only grow).
_RESUMABLE_CHANGES = {"epochs", "workers", "checkpoint_every", "device", "log_every"}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns (on every rank)."""

    model: nn.Module              # the final model: Polyak-averaged weights (raw ones if polyak = 0), eval mode
    out_dir: Path
    last_path: Path               # the resumable checkpoint
    model_path: Path              # the final model file (written by rank 0)
    epochs: int                   # epochs completed
    global_step: int              # optimizer steps taken in total
    history: tuple[dict[str, Any], ...]  # the per-epoch records written to log.jsonl by this call
    best_path: Path | None = None        # best.pt when validation picked one (this or an earlier call)
    best: dict[str, Any] | None = None   # {"metric": "val_AP50", "value": 0.41, "epoch": 3}, over the whole run


# ----------------------------------------------------------------------------------------------------
# Determinism: seeds, sample order, per-item seeding


def derive_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """``Tensor[n]`` int64: the order in which epoch ``epoch`` visits the samples."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of one epoch for one rank, as lists of ``(epoch, index)`` keys.

    Global batch ``i`` holds permutation positions ``[i*B, (i+1)*B)``; rank ``r`` of ``W`` takes
    positions ``i*B + r, i*B + r + W, ...`` (``B/W`` of them). Steps before ``start_step`` are skipped.
    """

    def __init__(self, n: int, global_batch: int, *, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, start_step: int = 0) -> None:
        self.n, self.global_batch, self.seed, self.epoch = n, global_batch, seed, epoch
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.steps = n // global_batch

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch)
        for step in range(self.start_step, self.steps):
            chunk = perm[step * self.global_batch:(step + 1) * self.global_batch][self.rank::self.world_size]
            yield [(self.epoch, i) for i in chunk.tolist()]


@dataclass(frozen=True)
class _Failure:
    """An InputError raised while reading an item, carried back from a worker process intact."""

    path: str | None
    problem: str


class _SeededItems(Dataset):
    """Seeds torch (CPU), numpy and random from ``(seed, epoch, index)`` before reading ``dataset[index]``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s = derive_seed(self.seed, epoch, index)
        torch.random.default_generator.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)
        try:
            return self.dataset[index]
        except InputError as err:  # DataLoader workers cannot re-raise InputError as itself
            return _Failure(err.path, err.problem)


class _Collate:
    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.collate_fn = collate_fn or torch.utils.data.default_collate

    def __call__(self, items: list[Any]) -> Any:
        for item in items:
            if isinstance(item, _Failure):
                return item
        return self.collate_fn(items)


# ----------------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass(frozen=True)
class _Dist:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among torchrun's processes (:func:`join_process_group`)."""

    rank: int = 0
    world_size: int = 1
    owns: bool = False  # the call joined the group: the caller tears it down (dist.destroy_process_group)


def join_process_group(device: torch.device, *, timeout: datetime.timedelta | None = None) -> ProcessGroup:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) join its process group, nccl for a CUDA
    ``device`` and gloo otherwise, unless this process has joined already; ``timeout`` for collectives
    (torch's default when None). Outside torchrun: rank 0 of 1, nothing joined.

    The one torchrun set-up, used by training (:func:`train`) and by sharded inference
    (:func:`detect.sharding.init_shard`). A CUDA caller makes its rank's GPU current first.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessGroup()
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if timeout is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), owns)


def _setup_distributed(config: TrainConfig) -> _Dist:
    """The training device and, under torchrun, the process group: each rank on its own GPU (``LOCAL_RANK``)."""
    device = resolve_device(config.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    group = join_process_group(device)
    return _Dist(group.rank, group.world_size, device, owns_group=group.owns)


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
               steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate at every SGD step, as a factor of ``config.lr``, stepped once per step.

    ``"step"``: the paper's decay (x ``lr_decay`` every ``lr_decay_every`` epochs); ``"cosine"``: from 1 down to 0
    over the run (SGDR without restarts, Loshchilov & Hutter 2017), for short runs from scratch that should end
    on small steps. Either is multiplied by a linear warm-up from 0.01 over the first ``warmup_steps`` steps
    (detectron2's and ultralytics' warm-up), which lets a random init take a larger ``lr`` without diverging.
    """
    total = config.epochs * steps_per_epoch
    if config.lr_schedule not in ("step", "cosine"):
        raise InputError(None, f"lr_schedule must be 'step' or 'cosine', not {config.lr_schedule!r}")
    if config.warmup_steps < 0:
        raise InputError(None, f"warmup_steps must be >= 0, not {config.warmup_steps}")

    def factor(step: int) -> float:
        if config.lr_schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        else:
            f = config.lr_decay ** (step // steps_per_epoch // config.lr_decay_every)
        if step < config.warmup_steps:
            f *= 0.01 + 0.99 * step / config.warmup_steps
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check_resume_config(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    for key, old in saved.items():
        new = getattr(config, key, old)
        if new != old and key not in _RESUMABLE_CHANGES:
            raise InputError(path, f"was trained with {key}={old!r}, cannot resume with {key}={new!r}")
    if saved.get("lr_schedule") == "cosine" and saved.get("epochs") != config.epochs:
        raise InputError(path, f"its cosine schedule ends after {saved.get('epochs')} epochs, cannot resume with "
                               f"epochs={config.epochs}")


def _default_save_final(config: TrainConfig, meta: dict[str, Any] | None) -> SaveFinal:
    def save(model: nn.Module, path: Path) -> None:
        with atomic_path(path) as tmp:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save({"model": state, "config": config.to_dict(), "meta": meta or {}}, tmp)
    return save


# ----------------------------------------------------------------------------------------------------
# The loop


def train(model: nn.Module, dataset: Dataset, loss_fn: LossFn, config: TrainConfig,
          out_dir: str | os.PathLike, *, resume: bool = False,
          collate_fn: Callable[[list[Any]], Any] | None = None, meta: dict[str, Any] | None = None,
          save_final: SaveFinal | None = None, validate: Validate | None = None,
          best_metric: str | None = None, sample_unit: tuple[str, int] | None = None) -> TrainResult:
    """Train ``model`` on ``dataset`` with SGD + momentum, step decay and Polyak averaging.

    Args:
        model: any ``nn.Module``; it is moved to the device (and to channels_last if configured).
        dataset: map-style; items are whatever ``collate_fn`` (default: torch's) and ``loss_fn`` expect.
            Items may raise :class:`InputError` (e.g. a corrupt image): it stops training with that message.
        loss_fn: ``loss_fn(model, batch, device) -> (loss, metrics)``; ``loss`` a scalar tensor that is a
            mean over the batch (so that gradients do not depend on how the batch is split over ranks).
        config: the recipe; ``config.batch_size`` is the global batch.
        out_dir: receives ``config.json``, ``last.pt``, ``log.jsonl`` and the final ``model.pt``.
        resume: continue from ``out_dir/last.pt`` (mid-epoch). Without it an existing ``last.pt`` is an error.
        meta: JSON-like dict stored in every checkpoint (e.g. class names, preprocessing, variant).
        save_final: writes the final model on rank 0 (default: ``{"model", "config", "meta"}`` via torch.save);
            also writes ``best.pt``.
        validate: see :data:`Validate`; run after every epoch (rank 0; the other ranks get its numbers).
            Its keys are recorded as ``val_<key>`` in ``log.jsonl``/``metrics.csv``, with ``val_time_s``.
        best_metric: a key ``validate`` returns (e.g. ``"AP50"``) to maximise: ``best.pt`` is the model of
            the epoch where it was highest (the first such epoch; NaN never counts). None: no ``best.pt``.
        sample_unit: what one dataset sample holds, as ``(name, count)``, e.g. ``("regions", 4)`` for
            region training, whose samples are groups of 4 regions. Epoch records always give
            ``samples_per_s``; with a unit also ``<name>_per_s``, and ``config.json`` states the batch in
            both (``"batch": {"samples_per_batch": 16, "regions_per_sample": 4, "regions_per_batch": 64}``).

    Returns:
        :class:`TrainResult` with the averaged model (eval mode, on the training device).
    """
    out = Path(out_dir)
    if sample_unit is not None and (not sample_unit[0].isidentifier() or int(sample_unit[1]) < 1):
        raise ValueError(f"sample_unit must be (name, count >= 1), got {sample_unit!r}")
    ctx = _setup_distributed(config)
    try:
        return _train(model, dataset, loss_fn, config, out, ctx, resume=resume, collate_fn=collate_fn,
                      meta=meta, save_final=save_final or _default_save_final(config, meta), validate=validate,
                      best_metric=best_metric, sample_unit=sample_unit)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(model: nn.Module, dataset: Dataset, loss_fn: LossFn, config: TrainConfig, out: Path, ctx: _Dist,
           *, resume: bool, collate_fn: Callable | None, meta: dict[str, Any] | None,
           save_final: SaveFinal, validate: Validate | None, best_metric: str | None,
           sample_unit: tuple[str, int] | None) -> TrainResult:
    steps_per_epoch = _steps_per_epoch(len(dataset), config, ctx)  # type: ignore[arg-type]
    last_path, log_path, final_path, best_path = out / LAST, out / LOG, out / FINAL, out / BEST
    best_key = None if validate is None or best_metric is None else _VAL + best_metric
    parts = _build_parts(model, config, ctx.device, steps_per_epoch)
    if resume:
        start = _resume(parts, last_path, config, steps_per_epoch, best_key)
    elif last_path.exists():
        raise InputError(out, "already holds a training run (last.pt); pass --resume to continue it "
                         "or choose another output folder")
    else:
        start = _Start()
    if ctx.is_main:
        _write_run_config(out, config, sample_unit, validate, best_key, meta)
    _warn_if_polyak_outlasts_run(parts, config, steps_per_epoch)
    train_model = _for_all_ranks(model, ctx)
    global_step, best, start_step = start.global_step, start.best, start.step

    def checkpoint(epoch: int, step: int, global_step: int) -> None:
        if ctx.is_main:
            _save_last(last_path, parts, config, meta, epoch=epoch, step=step, global_step=global_step, best=best)

    items = _SeededItems(dataset, config.seed)
    collate = _Collate(collate_fn)
    history: list[dict[str, Any]] = []
    for epoch in range(start.epoch, config.epochs):
        done = _train_epoch(train_model, parts, loss_fn, items, collate, config, ctx, epoch=epoch,
                            start_step=start_step, global_step=global_step, steps_per_epoch=steps_per_epoch,
                            checkpoint=checkpoint)
        global_step = done.global_step
        record = _epoch_record(done.sums, done.count, ctx, epoch=epoch + 1, lr=done.lr, elapsed=done.elapsed,
                               samples=done.count * config.batch_size, global_step=global_step,
                               sample_unit=sample_unit)
        if validate is not None:
            best = _validate_and_keep_best(validate, parts.final_model, record, ctx, epoch=epoch + 1,
                                           best_metric=best_metric, best_key=best_key, best=best,
                                           save_final=save_final, best_path=best_path)
        history.append(record)
        checkpoint(epoch + 1, 0, global_step)
        _log_epoch(record, log_path, out, ctx, epochs=config.epochs, best_key=best_key)
        start_step = 0

    final = parts.final_model
    final.eval()
    if ctx.is_main:
        save_final(final, final_path)
    if ctx.world_size > 1:
        dist.barrier()
    return TrainResult(model=final, out_dir=out, last_path=last_path, model_path=final_path,
                       epochs=max(config.epochs, start.epoch), global_step=global_step, history=tuple(history),
                       best_path=best_path if best is not None else None, best=best)


# ----------------------------------------------------------------------------------------------------
# The loop's steps


def _steps_per_epoch(n: int, config: TrainConfig, ctx: _Dist) -> int:
    """Optimizer steps per epoch for ``n`` samples (the last, partial batch is dropped); InputError when the
    global batch does not split over the processes or the data set is smaller than one batch."""
    if config.batch_size % ctx.world_size:
        raise InputError(None, f"--batch-size {config.batch_size} is not divisible by the {ctx.world_size} processes")
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise InputError(None, f"the training set has {n} samples, fewer than one batch of {config.batch_size}; "
                         "lower --batch-size")
    return steps_per_epoch


def _for_all_ranks(model: nn.Module, ctx: _Dist) -> nn.Module:
    """The module the steps call: ``model`` wrapped in DistributedDataParallel under torchrun, else itself."""
    if ctx.world_size <= 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                               else None)


@dataclass(frozen=True)
class _Parts:
    """What a training run updates: the model, its Polyak average, optimizer, schedule and AMP scaler."""

    model: nn.Module
    averaged: AveragedModel | None  # None when polyak = 0
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype

    @property
    def final_model(self) -> nn.Module:
        """The model in its final form: the Polyak average when averaging is on."""
        return self.averaged.module if self.averaged is not None else self.model


def _build_parts(model: nn.Module, config: TrainConfig, device: torch.device, steps_per_epoch: int) -> _Parts:
    """Move ``model`` to ``device`` (and memory format) and build its average, SGD, schedule and scaler."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    averaged = None
    if config.polyak > 0:
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.polyak), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"
    if config.amp_dtype not in ("bfloat16", "float16"):
        raise InputError(None, f"amp_dtype must be bfloat16 or float16, not {config.amp_dtype!r}")
    amp_dtype = getattr(torch, config.amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    return _Parts(model, averaged, optimizer, scheduler, scaler, use_amp, amp_dtype)


@dataclass(frozen=True)
class _Start:
    """Where a run starts: 0-based epoch, step within it, optimizer steps so far, and the best so far."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best: dict[str, Any] | None = None  # {"metric", "value", "epoch"} of best.pt, kept in last.pt


def _resume(parts: _Parts, last_path: Path, config: TrainConfig, steps_per_epoch: int,
            best_key: str | None) -> _Start:
    """Load ``last.pt`` into ``parts`` (one InputError line when it does not fit) and say where it stopped."""
    if not last_path.exists():
        raise InputError(last_path, "no checkpoint to resume from (train without --resume first)")
    from backbone.checkpoint import read_torch_file

    # validated as every checkpoint we read (regular file, bounded records, tensors that own their
    # storage and are finite); loaded on the CPU, load_state_dict moves each tensor to its parameter
    state = read_torch_file(last_path)
    missing = [k for k in _RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise InputError(last_path, f"not a training checkpoint of this program (no {', '.join(missing)}); "
                                    "train without --resume into another folder")
    if not isinstance(state["config"], dict) or not all(
            type(state[k]) is int and state[k] >= 0 for k in ("epoch", "step", "global_step")):
        raise InputError(last_path, "not a training checkpoint of this program (config not a dict, or "
                                    "epoch/step not non-negative integers)")
    _check_resume_config(state["config"], config, last_path)
    if parts.averaged is not None and state.get("averaged") is None:
        raise InputError(last_path, "was trained with polyak=0, cannot resume with Polyak averaging")
    try:
        parts.model.load_state_dict(state["model"])
        if parts.averaged is not None:
            parts.averaged.load_state_dict(state["averaged"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(last_path, f"does not fit this model or optimizer ({first[:200]})") from None
    epoch, step, global_step = state["epoch"], state["step"], state["global_step"]
    # the schedule counts SGD steps (checkpoints written before it did counted epochs): restart it there
    parts.scheduler.last_epoch = global_step
    for group, base in zip(parts.optimizer.param_groups, parts.scheduler.base_lrs):
        group["lr"] = base * parts.scheduler.lr_lambdas[0](global_step)
    best = state.get("best")
    if best is not None and best_key is not None and best["metric"] != best_key:
        log.warning("%s: best.pt was chosen by %s, this run chooses by %s: starting the best over",
                    last_path, best["metric"], best_key)
        best = None
    log.info("resuming %s at epoch %d, step %d of %d", last_path, epoch + 1, step, steps_per_epoch)
    return _Start(epoch, step, global_step, best)


def _write_run_config(out: Path, config: TrainConfig, sample_unit: tuple[str, int] | None,
                      validate: Validate | None, best_key: str | None, meta: dict[str, Any] | None) -> None:
    """``out/config.json``: the recipe, the batch in samples (and the task's unit), validation and ``meta``."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps({"train": config.to_dict(), "batch": _batch_record(config, sample_unit),
                                   "validation": None if validate is None else {"best_metric": best_key},
                                   "meta": meta or {}}, indent=2, default=str))


def _warn_if_polyak_outlasts_run(parts: _Parts, config: TrainConfig, steps_per_epoch: int) -> None:
    if parts.averaged is not None and config.epochs * steps_per_epoch < 1 / (1 - config.polyak):
        log.warning("Polyak decay %g averages over ~%d steps but the run has only %d: the final model will "
                    "lean towards early weights (lower --polyak for short runs)", config.polyak,
                    round(1 / (1 - config.polyak)), config.epochs * steps_per_epoch)


def _save_last(path: Path, parts: _Parts, config: TrainConfig, meta: dict[str, Any] | None, *, epoch: int,
               step: int, global_step: int, best: dict[str, Any] | None) -> None:
    """Write the resumable ``last.pt`` (atomically): everything :func:`_resume` reads back."""
    state = {"model": parts.model.state_dict(),
             "averaged": None if parts.averaged is None else parts.averaged.state_dict(),
             "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
             "scaler": parts.scaler.state_dict(), "epoch": epoch, "step": step, "global_step": global_step,
             "best": best, "config": config.to_dict(), "meta": meta or {}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@dataclass(frozen=True)
class _EpochTotals:
    """What :func:`_train_epoch` hands to the epoch record."""

    sums: dict[str, Tensor]  # loss and metrics summed over this call's steps (float64, on the device)
    count: int               # steps taken by this call
    lr: float                # learning rate at the epoch's (or resumed part's) first step
    elapsed: float           # seconds
    global_step: int         # optimizer steps in total after the epoch


def _train_epoch(train_model: nn.Module, parts: _Parts, loss_fn: LossFn, items: _SeededItems, collate: _Collate,
                 config: TrainConfig, ctx: _Dist, *, epoch: int, start_step: int, global_step: int,
                 steps_per_epoch: int, checkpoint: Callable[[int, int, int], None]) -> _EpochTotals:
    """One epoch (0-based ``epoch``) from ``start_step``: a progress bar, a divergence check every
    ``log_every`` steps, and ``checkpoint(epoch, step, global_step)`` every ``checkpoint_every`` steps."""
    sampler = EpochBatches(len(items), config.batch_size, seed=config.seed, epoch=epoch, rank=ctx.rank,
                           world_size=ctx.world_size, start_step=start_step)
    loader = DataLoader(items, batch_sampler=sampler, collate_fn=collate, num_workers=config.workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=False)
    train_model.train()
    sums: dict[str, Tensor] = {}
    count, t0 = 0, time.perf_counter()
    lr = parts.optimizer.param_groups[0]["lr"]
    bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not (wants_progress() and ctx.is_main), leave=False, unit="step")
    for step, batch in enumerate(loader, start=start_step):
        if isinstance(batch, _Failure):
            raise InputError(batch.path, batch.problem)
        loss, metrics = _train_step(train_model, parts, loss_fn, batch, ctx.device,
                                    seed=derive_seed(config.seed, epoch, step, ctx.rank, 0xD20))
        global_step += 1
        count += 1
        for key, value in {"loss": loss, **metrics}.items():
            value = torch.as_tensor(value, dtype=torch.float64).detach().to(ctx.device)
            sums[key] = sums.get(key, torch.zeros((), dtype=torch.float64, device=ctx.device)) + value
        bar.update(1)
        if count % config.log_every == 0 or step + 1 == steps_per_epoch:
            _show_running(sums, count, bar, epoch=epoch, step=step, steps_per_epoch=steps_per_epoch)
        if step + 1 < steps_per_epoch and global_step % config.checkpoint_every == 0:
            checkpoint(epoch, step + 1, global_step)
    bar.close()
    return _EpochTotals(sums, count, lr, time.perf_counter() - t0, global_step)


def _train_step(train_model: nn.Module, parts: _Parts, loss_fn: LossFn, batch: Any, device: torch.device, *,
                seed: int) -> tuple[Tensor, dict[str, float | Tensor]]:
    """One SGD step on ``batch`` (torch's generator seeded with ``seed`` first, for dropout): loss under
    autocast, scaled backward, optimizer, Polyak average, schedule. Returns ``loss_fn``'s loss and metrics."""
    torch.manual_seed(seed)
    with torch.autocast(device_type=device.type, dtype=parts.amp_dtype, enabled=parts.use_amp):
        loss, metrics = loss_fn(train_model, batch, device)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    if parts.averaged is not None:
        parts.averaged.update_parameters(parts.model)
    parts.scheduler.step()
    return loss, metrics


def _show_running(sums: dict[str, Tensor], count: int, bar: tqdm, *, epoch: int, step: int,
                  steps_per_epoch: int) -> None:
    """Running means on the progress bar and in the debug log; InputError when the loss is not finite."""
    running = {k: v.item() / count for k, v in sums.items()}
    if not math.isfinite(running["loss"]):
        raise InputError(None, f"training diverged: loss is {running['loss']} in epoch {epoch + 1}, "
                         f"step {step + 1}; lower --lr")
    bar.set_postfix({k: f"{v:.4g}" for k, v in running.items()})
    log.debug("epoch %d step %d/%d %s", epoch + 1, step + 1, steps_per_epoch,
              " ".join(f"{k} {v:.4g}" for k, v in running.items()))


def _validate_and_keep_best(validate: Validate, final: nn.Module, record: dict[str, Any], ctx: _Dist, *,
                            epoch: int, best_metric: str | None, best_key: str | None,
                            best: dict[str, Any] | None, save_final: SaveFinal,
                            best_path: Path) -> dict[str, Any] | None:
    """Add ``validate``'s numbers (``val_<name>``, ``val_time_s``) to the 1-based ``epoch``'s ``record``;
    when ``best_key`` beats ``best``, write ``best.pt`` (rank 0). Returns the best so far."""
    t_val = time.perf_counter()
    metrics = _run_validation(validate, final, epoch, ctx)
    record.update({_VAL + k: v for k, v in metrics.items()})
    record[_VAL + "time_s"] = time.perf_counter() - t_val
    if best_key is not None:
        if best_key not in record:
            raise ValueError(f"best_metric {best_metric!r} is not among the validation metrics "
                             f"({', '.join(metrics) or 'none'})")
        value = record[best_key]
        if math.isfinite(value) and (best is None or value > best["value"]):
            best = {"metric": best_key, "value": value, "epoch": epoch}
            if ctx.is_main:
                save_final(final, best_path)
            log.log(logging.INFO if ctx.is_main else logging.DEBUG, "epoch %d: best %s so far (%.4g) -> %s",
                    epoch, best_key, value, best_path)
    return best


def _log_epoch(record: dict[str, Any], log_path: Path, out: Path, ctx: _Dist, *, epochs: int,
               best_key: str | None) -> None:
    """Append ``record`` to ``log.jsonl`` and rebuild ``metrics.csv``/``curves.png`` (rank 0); log one line."""
    if ctx.is_main:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        write_summaries(log_path, out, best_metric=best_key)
    log.log(logging.INFO if ctx.is_main else logging.DEBUG, "epoch %d/%d: %s", record["epoch"], epochs,
            " ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch",)))


_VAL = "val_"  # prefix of validation numbers in the epoch records


class _PreservedRNG:
    """Saves torch's CPU (and CUDA, when initialised) generators, numpy's and ``random``'s on entry and
    restores them on exit: code inside may draw random numbers without changing what comes after."""

    def __enter__(self) -> "_PreservedRNG":
        self.torch_state = torch.get_rng_state()
        self.cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.numpy_state = np.random.get_state()
        self.random_state = random.getstate()
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_rng_state(self.torch_state)
        if self.cuda_states is not None:
            torch.cuda.set_rng_state_all(self.cuda_states)
        np.random.set_state(self.numpy_state)
        random.setstate(self.random_state)


def _run_validation(validate: Validate, model: nn.Module, epoch: int, ctx: _Dist) -> dict[str, float]:
    """``validate(model, epoch)`` on rank 0 (eval mode, no gradients, RNG preserved), shared with all ranks."""
    metrics: dict[str, float] | None = None
    if ctx.is_main:
        was_training = model.training
        model.eval()
        try:
            with _PreservedRNG(), torch.no_grad():
                metrics = {str(k): float(v) for k, v in validate(model, epoch).items()}
        finally:
            model.train(was_training)
    if ctx.world_size > 1:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    assert metrics is not None
    return metrics


def _batch_record(config: TrainConfig, sample_unit: tuple[str, int] | None) -> dict[str, Any]:
    """The global batch as config.json states it: in dataset samples, and in the task's unit if it has one."""
    batch: dict[str, Any] = {"samples_per_batch": config.batch_size}
    if sample_unit is not None:
        name, count = sample_unit[0], int(sample_unit[1])
        batch.update({f"{name}_per_sample": count, f"{name}_per_batch": config.batch_size * count})
    return batch


def _epoch_record(sums: dict[str, Tensor], count: int, ctx: _Dist, *, epoch: int, lr: float, elapsed: float,
                  samples: int, global_step: int, sample_unit: tuple[str, int] | None = None) -> dict[str, Any]:
    """Epoch means of loss and metrics (averaged over ranks), learning rate and throughput (dataset samples
    per second, and ``<unit>_per_s`` when the task says what a sample holds)."""
    keys = sorted(sums)
    values = torch.stack([sums[k] for k in keys]) / max(count, 1) if keys else torch.zeros(0)
    if ctx.world_size > 1 and keys:
        values = values.to(ctx.device)
        dist.all_reduce(values)
        values = values / ctx.world_size
    record: dict[str, Any] = {"epoch": epoch, "step": global_step, "world_size": ctx.world_size}
    record.update({k: float(v) for k, v in zip(keys, values.tolist())})
    rate = samples / elapsed if elapsed > 0 else 0.0
    record.update({"lr": lr, "samples_per_s": rate})
    if sample_unit is not None:
        record[f"{sample_unit[0]}_per_s"] = rate * int(sample_unit[1])
    record["time_s"] = elapsed
    return record


class MethodAsForward(nn.Module):
    """Makes ``module.<method>`` the ``forward`` of a module, e.g. ``MethodAsForward(net, "forward_train")``.

    DistributedDataParallel synchronises gradients only through its own ``forward``, so a training-only
    method (GoogLeNet's auxiliary logits) must be reached through ``forward`` to train under torchrun.
    The wrapped module is ``.module``; state dict keys gain the prefix ``module.``.
    """

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        if not callable(getattr(module, method, None)):
            raise AttributeError(f"{type(module).__name__} has no method {method!r}")
        self.module, self.method = module, method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random (for model initialisation before :func:`train`)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


__all__: Sequence[str] = ("TrainConfig", "TrainResult", "train", "LossFn", "SaveFinal", "Validate", "EpochBatches",
                          "MethodAsForward", "epoch_permutation", "derive_seed", "seed_everything", "ProcessGroup",
                          "join_process_group")
