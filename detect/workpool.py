"""An ordered, bounded process pool for per-image work that may fail per image (``detect proposals``, the
detector's selective search in :meth:`detect.pipeline.Detector.detect_each`).

:func:`imap_ordered` runs ``fn(item)`` for each item in ``workers`` processes (in this process when
``workers <= 1``) and yields ``(item, value, error)`` in input order as soon as each is ready: ``error`` is
the :class:`~backbone.errors.InputError` the item raised (the run goes on), other exceptions propagate.
At most ``2 x workers`` items are in flight, so memory stays flat on any number of items. Workers ignore
Ctrl-C (the parent reports it once) and are stopped at once when the caller stops or is interrupted.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import signal
from typing import Any, Callable, Iterator, Sequence

import torch

from backbone.errors import InputError


def _init_worker() -> None:
    """Worker processes: one thread each; Ctrl-C is the parent's to handle (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def imap_ordered(fn: Callable[[Any], Any], items: Sequence[Any], *, workers: int = 1,
                 start_method: str | None = None) -> Iterator[tuple[Any, Any, InputError | None]]:
    """``(item, fn(item), None)`` or ``(item, None, InputError)`` for each item, in order.

    ``start_method``: how worker processes start (``"spawn"``, ``"fork"``, ...); None = fork where CUDA is
    not initialised, spawn otherwise. ``fn`` must be picklable (a module-level function or a picklable
    object) under spawn.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            try:
                value = fn(item)
            except InputError as err:
                yield item, None, err
                continue
            yield item, value, None
        return
    if start_method is None:  # fork is cheap where CUDA is not initialised (torch's DataLoader does the same)
        use_fork = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized()
        start_method = "fork" if use_fork else "spawn"
    ctx = multiprocessing.get_context(start_method)
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    pending: list[cf.Future] = []
    it = iter(items)
    try:
        # workers start at the first submit, with SIGINT ignored, so that they inherit "ignore" from their
        # first instruction (a Ctrl-C while a spawned worker imports torch prints nothing)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    break
        finally:
            signal.signal(signal.SIGINT, previous)
        for item in items:
            future = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            try:
                value = future.result()
            except InputError as err:
                yield item, None, err
                continue
            yield item, value, None
    except BaseException:
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.join(timeout=5)
        raise
    pool.shutdown(wait=True)
