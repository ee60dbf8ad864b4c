"""Proposal caches: round trip, resume after an exception or a SIGKILL, corrupt entries, config checks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbone.errors import InputError
from proposals.cache import build_cache, cache_dir, entry_path, load_cached, propose_many
from proposals.structures import Proposals

CALLS: list[int] = []


@dataclass(frozen=True)
class GridMethod:
    """Stand-in proposal method: ``n`` boxes derived from the image size and its mean colour."""

    name: str = "grid"
    n: int = 3
    delay: float = 0.0
    fail_after: int | None = None  # raise on the call after this many (in-process runs only)

    def describe(self) -> dict:
        return {"method": self.name, "n": self.n}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()

    def __call__(self, image: np.ndarray) -> Proposals:
        if self.fail_after is not None and len(CALLS) >= self.fail_after:
            raise RuntimeError("simulated crash")
        CALLS.append(1)
        time.sleep(self.delay)
        h, w = image.shape[:2]
        k = torch.arange(1, self.n + 1, dtype=torch.float32)
        boxes = torch.stack([k, k, w - k, h - k], 1) + float(image.mean()) / 255
        return Proposals(boxes, -k, torch.zeros(self.n, dtype=torch.int64))


def make_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        cv2.imwrite(str(p), np.full((12 + i, 16, 3), 10 * i, np.uint8))
        paths.append(p)
    return paths


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_round_trip_and_skip(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 4)
    out = cache_dir(tmp_path / "cache", GridMethod())
    assert out.name.startswith("grid-") and len(out.name) == len("grid-") + 12
    stats = build_cache(paths, GridMethod(), out)
    assert stats["computed"] == 4 and stats["skipped"] == 0 and len(CALLS) == 4
    direct = propose_many(GridMethod(), paths)
    for p, d in zip(paths, direct):
        got = load_cached(out, p.stem)
        assert torch.equal(got.boxes, d.boxes) and torch.equal(got.scores, d.scores)
        assert got.sources.dtype == torch.int64
    CALLS.clear()
    again = build_cache(paths, GridMethod(), out)
    assert again["computed"] == 0 and again["skipped"] == 4 and not CALLS
    entry = torch.load(entry_path(out, "img00"), weights_only=True)  # tensors + plain strings only
    assert entry["config_hash"] == GridMethod().config_hash()


def test_resume_after_exception_does_not_recompute_finished_images(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 5)
    out = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(paths, GridMethod(fail_after=2), out)
    assert sorted(p.name for p in out.glob("*.pt")) == ["img00.pt", "img01.pt"]
    assert not list(out.glob(".*.tmp"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    CALLS.clear()
    stats = build_cache(paths, GridMethod(), out)  # same config hash: fail_after is not part of it
    assert stats["skipped"] == 2 and stats["computed"] == 3 and len(CALLS) == 3
    assert all((out / name).stat().st_mtime_ns == t for name, t in mtimes.items())


def test_corrupt_entry_is_detected_and_recomputed(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "cache"
    build_cache(paths, GridMethod(), out)
    good = load_cached(out, "img01")
    bad = entry_path(out, "img01")
    bad.write_bytes(bad.read_bytes()[:40])  # truncated file
    with pytest.raises(InputError, match="corrupt"):
        load_cached(out, "img01")
    with pytest.raises(InputError, match="no such cache entry"):
        load_cached(out, "img99")
    CALLS.clear()
    stats = build_cache(paths, GridMethod(), out)
    assert stats == {**stats, "computed": 1, "skipped": 2, "recomputed": 1} and len(CALLS) == 1
    assert torch.equal(load_cached(out, "img01").boxes, good.boxes)


def test_other_config_is_refused(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 1)
    out = tmp_path / "cache"
    build_cache(paths, GridMethod(n=3), out)
    with pytest.raises(InputError, match="another method/config"):
        build_cache(paths, GridMethod(n=4), out)
    assert cache_dir(tmp_path, GridMethod(n=3)) != cache_dir(tmp_path, GridMethod(n=4))


def test_duplicate_image_ids_are_refused(tmp_path: Path) -> None:
    a = make_images(tmp_path / "a", 1)
    b = make_images(tmp_path / "b", 1)
    with pytest.raises(InputError, match="also used by"):
        build_cache(a + b, GridMethod(), tmp_path / "cache")


KILL_SCRIPT = """
import sys
sys.path.insert(0, {testdir!r})
from pathlib import Path
from test_cache import GridMethod
from proposals.cache import build_cache
paths = sorted(Path({imgs!r}).glob("*.png"))
build_cache(paths, GridMethod(delay={delay}), {out!r}, workers={workers})
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_midway_then_resume(tmp_path: Path, workers: int) -> None:
    """A process killed with SIGKILL mid-run: restart skips finished images, leaves no corrupt entry."""
    paths = make_images(tmp_path / "imgs", 8)
    out = tmp_path / "cache"
    script = KILL_SCRIPT.format(testdir=str(Path(__file__).parent), imgs=str(tmp_path / "imgs"),
                                out=str(out), delay=0.4, workers=workers)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.pt"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the pool's workers die too
        proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    assert 2 <= len(done) < 8, "the run was not interrupted midway"
    stats = build_cache(paths, GridMethod(), out)
    assert stats["skipped"] == len(done) and stats["computed"] == 8 - len(done) and stats["recomputed"] == 0
    assert all((out / name).stat().st_mtime_ns == t for name, t in done.items())
    assert not list(out.glob(".*.tmp"))
    for p in paths:
        assert len(load_cached(out, p.stem)) == 3


def test_propose_many_with_workers_keeps_order(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 3)
    many = propose_many(GridMethod(), paths, workers=2)
    single = [GridMethod()(cv2.imread(str(p))[:, :, ::-1]) for p in paths]
    for a, b in zip(many, single):
        assert torch.allclose(a.boxes, b.boxes)
