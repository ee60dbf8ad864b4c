"""Data-set-scale inference over several processes/GPUs/nodes with ``torchrun``.

``torch.distributed`` is the engine: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each rank
takes every ``world``-th item, and the per-item results are gathered to rank 0 with
``gather_object``, which alone writes the outputs. Results are keyed by item index, so the merged
output is identical to a single-process run.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

from backbone.engine import join_process_group


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[Any]) -> list[tuple[int, Any]]:
        """This rank's ``(index, item)`` pairs: every ``world``-th item starting at ``rank``."""
        return [(i, items[i]) for i in range(self.rank, len(items), self.world)]

    def gather(self, results: list[tuple[int, Any]]) -> list[Any] | None:
        """All ranks' ``(index, result)`` pairs, ordered by index, on rank 0; None on other ranks."""
        if self.world == 1:
            return [r for _, r in sorted(results, key=lambda t: t[0])]
        parts: list | None = [None] * self.world if self.is_main else None
        dist.gather_object(results, parts, dst=0)
        if not self.is_main:
            return None
        merged = [pair for part in parts for pair in part]
        return [r for _, r in sorted(merged, key=lambda t: t[0])]


def init_shard(device: torch.device) -> Shard:
    """Join the ``torchrun`` process group if there is one (NCCL on CUDA, gloo otherwise; collectives wait up
    to 2 hours, for ranks whose shards take longer): :func:`backbone.engine.join_process_group`."""
    group = join_process_group(device, timeout=datetime.timedelta(hours=2))
    return Shard(group.rank, group.world_size)


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, each rank's own GPU (``LOCAL_RANK``); otherwise ``device`` unchanged."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ and device.index is None:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def barrier(shard: Shard) -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if shard.world > 1 and dist.is_initialized():
        dist.barrier()


def finish(shard: Shard) -> None:
    if shard.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
