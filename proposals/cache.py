"""Proposal caches: one ``.pt`` file per image, for a whole data set, resumable and parallel.

R-CNN computes proposals once per data set and reuses them for fine-tuning, testing and evaluation; on
2,000 boxes/image selective search costs seconds per image, so the cache must survive interruption.

Layout of a cache folder (:func:`cache_dir` names it ``<method>-<first 12 hex of the config hash>``)::

    <root>/paper-3f2a9c01b7de/
        cache.json          method settings (ProposalMethod.describe()) + full config hash
        <image_id>.pt       {"boxes" Tensor[N, 4] float32 xyxy pixels, "scores" Tensor[N],
                             "sources" Tensor[N] int64, "config_hash" str, "image_id" str}

Every entry is written atomically (:func:`backbone.files.atomic_path`: temp file + rename) by the worker
that computed it, so a killed run leaves only complete entries (plus temp files, removed on the next run).
:func:`build_cache` skips images whose entry loads (``torch.load(weights_only=True)``) and carries the
folder's config hash; anything else (truncated, corrupt, other config) is recomputed.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import logging
import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm import tqdm

from backbone.console import wants_progress
from backbone.errors import InputError
from backbone.files import atomic_path, write_json
from backbone.images import read_image
from proposals.merge import ProposalMethod
from proposals.structures import Proposals

log = logging.getLogger(__name__)

MANIFEST = "cache.json"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class CacheItem:
    """One image to cache: its id (file name of the entry) and its path."""

    image_id: str
    file: str


def as_items(sources: Iterable[Any]) -> list[CacheItem]:
    """Turn dataset records (with ``image_id`` and ``file``) or image paths into :class:`CacheItem`.

    Paths get their file stem as id. Raises :class:`InputError` on two images with the same id.
    """
    items: list[CacheItem] = []
    seen: dict[str, str] = {}
    for src in sources:
        if isinstance(src, CacheItem):
            item = src
        elif isinstance(src, (str, os.PathLike)):
            item = CacheItem(Path(src).stem, os.fspath(src))
        else:
            item = CacheItem(str(src.image_id), os.fspath(src.file))
        if item.image_id in seen:
            raise InputError(item.file, f"image id {item.image_id!r} is also used by {seen[item.image_id]}")
        seen[item.image_id] = item.file
        items.append(item)
    return items


def cache_dir(root: str | os.PathLike, method: ProposalMethod) -> Path:
    """``root / "<method>-<hash12>"``: the folder :func:`build_cache` fills for ``method``."""
    return Path(root) / f"{method.name}-{method.config_hash()[:12]}"


def entry_path(out_dir: str | os.PathLike, image_id: str | int) -> Path:
    """``out_dir/<image_id>.pt``; an id with characters unsafe in file names has them replaced by ``_`` and
    a short hash of the id appended, so that ids such as ``a/b``, ``a b`` and ``a_b`` keep separate entries."""
    raw = str(image_id)
    safe = _SAFE_ID.sub("_", raw)
    if safe != raw:
        safe = f"{safe}-{hashlib.sha1(raw.encode('utf-8')).hexdigest()[:8]}"
    return Path(out_dir) / f"{safe}.pt"


#: Most boxes one cache entry may hold (selective search in quality mode gives ~10,000 per image).
MAX_ENTRY_BOXES = 1_000_000
#: Largest cache entry file read (1,000,000 boxes take ~28 MB).
MAX_ENTRY_BYTES = 64 << 20


def _read_entry(path: Path, config_hash: str | None) -> Proposals | None:
    """The entry at ``path``, or None if it is missing, unreadable, malformed or of another config.

    Checked before any tensor is copied: a regular file below :data:`MAX_ENTRY_BYTES` (read as
    :func:`backbone.checkpoint.read_torch_file` reads, so its tensors own their storage: a 2 KB entry of
    stride-0 views took 9.9 GB when converted), ``boxes`` ``Tensor[N, 4]``, ``scores`` and ``sources``
    ``Tensor[N]``, ``N`` at most :data:`MAX_ENTRY_BOXES`.
    """
    from backbone.checkpoint import read_torch_file
    from backbone.safeio import regular_file

    try:
        regular_file(path, max_bytes=MAX_ENTRY_BYTES)
        data = read_torch_file(path)
        if not isinstance(data, dict) or (config_hash is not None and data.get("config_hash") != config_hash):
            return None
        boxes, scores, sources = data["boxes"], data["scores"], data["sources"]
        if not all(isinstance(t, torch.Tensor) for t in (boxes, scores, sources)):
            return None
        n = boxes.shape[0] if boxes.ndim == 2 else -1
        if not (0 <= n <= MAX_ENTRY_BOXES and boxes.shape[1] == 4 and scores.shape == (n,) and sources.shape == (n,)
                and boxes.is_floating_point() and scores.is_floating_point() and not sources.is_floating_point()):
            return None
        return Proposals(boxes.float(), scores.float(), sources.long())
    except Exception:  # noqa: BLE001 - any failure means "not a valid entry": recompute it
        return None


def load_cached(out_dir: str | os.PathLike, image_id: str | int) -> Proposals:
    """The cached proposals of ``image_id`` in the cache folder ``out_dir``.

    Raises:
        InputError: no such entry, or it is corrupt / from another configuration than the folder's.
    """
    out = Path(out_dir)
    manifest = _read_manifest(out)
    if manifest is None:
        raise InputError(out, f"not a proposal cache folder (no readable {MANIFEST})")
    path = entry_path(out, image_id)
    props = _read_entry(path, manifest["config_hash"])
    if props is None:
        problem = "no such cache entry" if not path.exists() else "corrupt or stale cache entry; rebuild the cache"
        raise InputError(path, problem)
    return props


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """``cache.json`` of the folder ``out`` (a regular file below 1 MB), or None."""
    from backbone.safeio import load_json

    try:
        manifest = load_json(out / MANIFEST, max_bytes=1 << 20)
    except InputError:
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("config_hash"), str) else None


# Worker side ----------------------------------------------------------------------------------------

def _compute_one(method: ProposalMethod, item: CacheItem, out_dir: str | None,
                 config_hash: str | None) -> tuple[str, Proposals | int]:
    """Compute one image; with ``out_dir`` write its entry and return the box count, else the proposals.
    An unreadable image raises InputError (it crosses the process pool intact)."""
    props = method(read_image(item.file))
    if out_dir is None:
        return item.image_id, props
    with atomic_path(entry_path(out_dir, item.image_id)) as tmp:
        torch.save({"boxes": props.boxes.contiguous(), "scores": props.scores.contiguous(),
                    "sources": props.sources.contiguous(), "config_hash": config_hash,
                    "image_id": item.image_id}, tmp)
    return item.image_id, len(props)


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core; no oversubscription


def _run(method: ProposalMethod, items: Sequence[CacheItem], out_dir: str | None, config_hash: str | None,
         workers: int, desc: str) -> dict[str, Proposals | int]:
    """Run ``method`` over ``items`` (in-process when ``workers <= 1``, else a process pool).

    The first unreadable image stops the run with its :class:`InputError` (entries already written stay).
    """
    results: dict[str, Proposals | int] = {}
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not wants_progress())
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                key, value = _compute_one(method, item, out_dir, config_hash)
                results[key] = value
                bar.update()
        else:
            # fork is cheap (no re-import of torch) and what torch's DataLoader uses; CUDA does not
            # survive a fork, so spawn once CUDA is initialised (or where fork does not exist)
            use_fork = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized()
            ctx = multiprocessing.get_context("fork" if use_fork else "spawn")
            with futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                jobs = [pool.submit(_compute_one, method, item, out_dir, config_hash) for item in items]
                try:
                    for job in futures.as_completed(jobs):
                        key, value = job.result()
                        results[key] = value
                        bar.update()
                except BaseException:
                    for job in jobs:
                        job.cancel()
                    raise
    finally:
        bar.close()
    return results


def propose_many(method: ProposalMethod, sources: Iterable[Any], *, workers: int = 1) -> list[Proposals]:
    """Proposals for many images without a cache, in input order (records or paths, see :func:`as_items`)."""
    items = as_items(sources)
    results = _run(method, items, None, None, workers, f"proposals ({method.name})")
    return [results[item.image_id] for item in items]  # type: ignore[misc]


def build_cache(sources: Iterable[Any], method: ProposalMethod, out_dir: str | os.PathLike, *,
                workers: int = 1) -> dict[str, Any]:
    """Fill the cache folder ``out_dir`` with ``method``'s proposals for every image; resumable.

    Args:
        sources: dataset records (``image_id``, ``file``) or image paths.
        method: a :class:`ProposalMethod` (or anything picklable with ``name``, ``describe()``,
            ``config_hash()`` and ``__call__(image) -> Proposals``); its config hash is stored in
            ``out_dir/cache.json`` and in each entry.
        out_dir: the cache folder (usually :func:`cache_dir` of a root). A folder holding another
            configuration's cache is refused.
        workers: processes (1 = in this process).

    Returns:
        ``{"folder", "config_hash", "images", "computed", "skipped", "recomputed"}`` — counts of images;
        ``recomputed`` = entries that existed but were corrupt or stale.
    """
    items = as_items(sources)
    out = Path(out_dir)
    config_hash = method.config_hash()
    manifest = _read_manifest(out)
    if manifest is not None and manifest.get("config_hash") != config_hash:
        raise InputError(out, "cache folder holds proposals of another method/config; use another folder")
    if manifest is None:
        if out.exists() and any(out.glob("*.pt")):
            raise InputError(out, f"folder has .pt files but no {MANIFEST}; not a proposal cache")
        write_json(out / MANIFEST, {"config_hash": config_hash, "settings": method.describe()}, indent=1)
    for tmp in out.glob(".*.tmp"):  # leftovers of a killed run (atomic_path's temp files)
        tmp.unlink(missing_ok=True)
    todo, recomputed = [], 0
    for item in items:
        path = entry_path(out, item.image_id)
        if path.exists():
            if _read_entry(path, config_hash) is not None:
                continue
            recomputed += 1
            log.warning("%s: corrupt or stale cache entry, recomputing", path)
        todo.append(item)
    log.info("proposal cache %s: %d of %d images to compute", out, len(todo), len(items))
    _run(method, todo, os.fspath(out), config_hash, workers, f"caching {method.name}")
    return {"folder": os.fspath(out), "config_hash": config_hash, "images": len(items),
            "computed": len(todo), "skipped": len(items) - len(todo), "recomputed": recomputed}
