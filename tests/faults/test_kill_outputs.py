"""Killed mid-run: a proposal cache resumes without recomputing or keeping a corrupt entry, and a killed
`detect run --out X.json` leaves no half-written JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from detect.cli import main as detect_main
from proposals.cache import MANIFEST, load_cached

from ._kill import kill_when, lines, start_slowed
from ._tiny_data import picture

pytestmark = pytest.mark.slow

N_IMAGES = 8


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(picture(40, 56, i, (5 + i, 4, 30 + i, 28))).save(folder / f"img{i}.png")
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_proposal_cache_killed_then_restarted(photos, tmp_path, capsys):
    cache = tmp_path / "cache"
    reads = tmp_path / "reads.log"
    argv = ["proposals", str(photos), "--method", "ss", "--cache", str(cache), "--workers", "1"]
    proc = start_slowed("detect.cli", [*argv, "--out", str(tmp_path / "killed.json")], delay=0.4, read_log=reads)
    kill_when(proc, lambda: lines(reads) >= 4)
    (folder,) = [d for d in cache.iterdir() if d.is_dir()]
    done = sorted(folder.glob("*.pt"))
    assert 1 <= len(done) < N_IMAGES, f"{len(done)} entries: not killed midway"
    assert not (tmp_path / "killed.json").exists()
    for entry in done:  # every entry a killed run left is complete
        props = load_cached(folder, entry.stem)
        assert props.boxes.shape[1] == 4 and len(props) > 0
    # what a kill inside a write would leave, and a damaged entry: both must be dealt with on restart
    (folder / ".img7.pt.abc123.tmp").write_bytes(b"half a file")
    damaged = done[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    kept = {p: (_sha(p), p.stat().st_mtime_ns) for p in done[1:]}

    out = tmp_path / "props.json"
    capsys.readouterr()
    assert detect_main([*argv, "--out", str(out)]) == 0
    log = capsys.readouterr().err  # the command's logging goes to stderr
    todo = N_IMAGES - len(kept)
    assert f"{todo} of {N_IMAGES} images to compute" in log, log
    assert "corrupt or stale cache entry" in log and damaged.name in log
    for p, (sha, mtime) in kept.items():  # finished entries were not recomputed
        assert (_sha(p), p.stat().st_mtime_ns) == (sha, mtime)
    assert not list(folder.glob("*.tmp"))
    assert (folder / MANIFEST).exists() and len(list(folder.glob("*.pt"))) == N_IMAGES

    # the same proposals as an uninterrupted run
    fresh = tmp_path / "fresh.json"
    assert detect_main(["proposals", str(photos), "--method", "ss", "--cache", str(tmp_path / "cache2"),
                        "--out", str(fresh)]) == 0
    assert json.loads(out.read_text()) == json.loads(fresh.read_text())


def test_killed_detect_run_leaves_no_half_json(photos, tmp_path, tiny_region_classifier):
    out = tmp_path / "dets.json"
    reads = tmp_path / "reads.log"
    proc = start_slowed("detect.cli", ["run", str(photos), "--weights", str(tiny_region_classifier), "--fast",
                                       "--device", "cpu", "--workers", "0", "--out", str(out)],
                        delay=0.4, read_log=reads)
    kill_when(proc, lambda: lines(reads) >= 3)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("dets", ".dets")))
    # only the per-image results that --resume continues from (issue 12), never a half-written dets.json
    assert leftovers == ["dets.json.parts"], f"a killed run left {leftovers}"
    assert not list((tmp_path / "dets.json.parts").glob("*.tmp"))


@pytest.fixture()
def tiny_region_classifier(tmp_path) -> Path:
    from detect.classifier import RegionClassifier
    from detect.crops import CropConfig

    path = tmp_path / "rc.pt"
    RegionClassifier.from_backbone(["red", "orange"], variant="paper", weights=None,
                                   crop=CropConfig(size=64, padding=4), aux_logits=False).save(path)
    return path
