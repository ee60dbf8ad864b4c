"""Per-image results of a run kept on disk as it goes, so memory stays flat and a killed run resumes.

``detect run --out dets.json`` keeps a folder ``dets.json.parts/`` beside its output while it runs::

    dets.json.parts/
        run.json              what the run is (config, models, inputs, world size): --resume checks it
        rank0-of-1.jsonl      one JSON line per input processed by that rank, appended and flushed as
                              each image is done: {"i": index in the input list, "input": path or URL,
                              "width", "height", "proposals", "boxes" [[x1, y1, x2, y2], ...] (pixels,
                              float32 values as exact decimals), "scores", "labels" (1..K),
                              "seconds" [proposals, classify, nms]}; or {"i", "input", "error": message};
                              `detect proposals` stores {"i", "input", "value": its output entry}

Under torchrun every rank appends to its own file (its shard of the inputs); rank 0 writes the final
outputs by reading every rank's file (the folder must be on a file system all ranks share). A line cut
by a kill is ignored (and cut off) on resume; an input whose last line is an error is tried again.
Final outputs are written from these files only, so an interrupted-and-resumed run gives the same bytes
as an uninterrupted one. The folder is removed once the final outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from backbone.errors import InputError
from backbone.files import write_json
from detect.pipeline import ImageResult, Timing
from detect.sharding import Shard, barrier
from detect.structures import Detections

MANIFEST = "run.json"

log = logging.getLogger(__name__)


def parts_folder(out: str | os.PathLike) -> Path:
    """The folder of per-image results beside the output ``out``: ``<out>.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def fingerprint(*, config: dict, weights: Sequence[str] | None, multibox_weights: str | None,
                inputs: Sequence[Any], world: int) -> dict:
    """What must match for ``--resume`` to continue a run: the options, the model files (path, size,
    modification time), the input list (count and hash) and the number of ranks."""
    def file_id(path: str) -> list:
        st = os.stat(path)
        return [os.path.abspath(path), st.st_size, st.st_mtime_ns]

    digest = hashlib.sha256("\n".join(str(i) for i in inputs).encode("utf-8", "surrogateescape")).hexdigest()
    return {"config": config, "weights": [file_id(w) for w in weights or []],
            "multibox_weights": file_id(multibox_weights) if multibox_weights else None,
            "inputs": {"count": len(inputs), "sha256": digest}, "world_size": world}


def prepare(folder: Path, fp: dict, *, resume: bool) -> int:
    """Make ``folder`` ready for a run described by ``fp`` (rank 0 only, before the other ranks open it).

    Without ``resume`` an earlier run's folder is cleared. With ``resume`` the folder must exist and its
    manifest equal ``fp``. Returns the number of inputs an earlier run already finished (0 when new).
    Raises InputError (one line) when there is nothing to resume or it was a different run.
    """
    manifest = folder / MANIFEST
    if resume:
        if not manifest.is_file():
            raise InputError(folder, "--resume: no partial results here (the run finished, or never started "
                                     "with this --out); run without --resume")
        try:
            earlier = json.loads(manifest.read_text())
        except (OSError, ValueError):
            raise InputError(manifest, "--resume: unreadable; run without --resume to start over") from None
        if earlier != json.loads(json.dumps(fp)):
            diff = ", ".join(k for k in fp if earlier.get(k) != json.loads(json.dumps(fp[k])))
            raise InputError(folder, f"--resume: the earlier run differs in {diff or 'its settings'}; "
                                     "run with the same options, or without --resume to start over")
        return counts(folder)[0]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(manifest, fp, indent=1)
    return 0


def open_run(folder: Path, fp: dict, shard: Shard, *, resume: bool) -> tuple[RankFile, int]:
    """Start (or with ``resume`` continue) a run's per-image results in ``folder`` on every rank: the main rank
    prepares the folder (:func:`prepare`), the others wait for it, then each opens its own file.

    Returns ``(this rank's RankFile, inputs an earlier run already finished)``.
    """
    already = 0
    if shard.is_main:
        if not resume and (folder / MANIFEST).exists():
            log.info("%s: results of an earlier unfinished run; starting over (--resume continues it)", folder)
        already = prepare(folder, fp, resume=resume)
    barrier(shard)
    return RankFile.open(folder, shard.rank, shard.world), already


def _scan(path: Path) -> Iterator[tuple[int, int, bool, int]]:
    """(index, offset, ok, end offset) of each complete line of one rank file (a cut last line is left out)."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            end = offset + len(line)
            if line.endswith(b"\n"):
                try:
                    rec = json.loads(line)
                    yield int(rec["i"]), offset, "error" not in rec, end
                except (ValueError, KeyError, TypeError):
                    pass
            offset = end


def _latest(folder: Path) -> dict[int, tuple[Path, int, bool]]:
    """index -> (file, offset, ok) of the last record of each input over every rank file."""
    latest: dict[int, tuple[Path, int, bool]] = {}
    for path in sorted(folder.glob("rank*.jsonl")):
        for index, offset, ok, _ in _scan(path):
            latest[index] = (path, offset, ok)
    return latest


@dataclass
class RankFile:
    """One rank's append-only file of per-image records."""

    path: Path
    done: set[int] = field(default_factory=set)  # inputs this rank already finished (an earlier run)

    @classmethod
    def open(cls, folder: Path, rank: int, world: int) -> "RankFile":
        path = folder / f"rank{rank}-of-{world}.jsonl"
        done: set[int] = set()
        good_end = 0
        if path.exists():
            for index, _, ok, end in _scan(path):
                (done.add if ok else done.discard)(index)
                good_end = end
            if good_end != path.stat().st_size:  # a line cut by the kill: drop it
                with open(path, "r+b") as f:
                    f.truncate(good_end)
        return cls(path, done)

    def _append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
            f.flush()

    def add(self, index: int, result: ImageResult) -> None:
        d = result.detections
        t = result.timing
        self._append({"i": index, "input": str(result.path), "width": result.width, "height": result.height,
                      "proposals": result.num_proposals, "boxes": d.boxes.tolist(), "scores": d.scores.tolist(),
                      "labels": d.labels.tolist(), "seconds": [t.proposals, t.classify, t.nms]})

    def add_error(self, index: int, item: Any, problem: str) -> None:
        self._append({"i": index, "input": str(item), "error": problem})

    def add_value(self, index: int, item: Any, value: Any) -> None:
        """Any JSON value as one input's result (``detect proposals``: its output entry)."""
        self._append({"i": index, "input": str(item), "value": value})


@dataclass(frozen=True)
class Record:
    """One input's stored outcome: ``result`` when it was processed, else the ``error`` line."""

    index: int
    input: str
    result: ImageResult | None
    error: str | None


def _record(rec: dict, as_path: bool) -> Record:
    if "error" in rec:
        return Record(rec["i"], rec["input"], None, rec["error"])
    labels = torch.tensor(rec["labels"], dtype=torch.int64)
    dets = Detections(torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4),
                      torch.tensor(rec["scores"], dtype=torch.float32), labels)
    item = Path(rec["input"]) if as_path else rec["input"]
    result = ImageResult(item, rec["width"], rec["height"], dets, rec["proposals"], Timing(*rec["seconds"]))
    return Record(rec["i"], rec["input"], result, None)


def raw_records(folder: Path) -> Iterator[dict]:
    """Every input's latest record (as stored) from all rank files, in input order, one at a time
    (memory: one offset per input). Inputs without a record (never reached) are left out."""
    latest = _latest(folder)
    handles: dict[Path, Any] = {}
    try:
        for index in sorted(latest):
            path, offset, _ = latest[index]
            f = handles.get(path) or handles.setdefault(path, open(path, "rb"))
            f.seek(offset)
            yield json.loads(f.readline())
    finally:
        for f in handles.values():
            f.close()


def counts(folder: Path) -> tuple[int, int]:
    """(inputs done, inputs whose latest record is an error) over every rank file."""
    latest = _latest(folder)
    ok = sum(1 for v in latest.values() if v[2])
    return ok, len(latest) - ok


def records(folder: Path, inputs: Sequence[Any]) -> Iterator[Record]:
    """:func:`raw_records` as :class:`Record` (``detect run``'s detections rebuilt as ImageResult)."""
    from backbone.inputs import is_url

    for rec in raw_records(folder):
        index = rec["i"]
        yield _record(rec, as_path=not is_url(inputs[index]) if index < len(inputs) else True)
