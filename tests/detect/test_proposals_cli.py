"""`detect proposals`: JSON output, --gt statistics, caches, the paper method, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import proposals.selective_search  # noqa: F401  the project's own module: it must import, never skip
from detect.cli import main


def two_blobs(path: Path, rng: np.random.Generator, h: int = 48, w: int = 64) -> Path:
    image = np.full((h, w, 3), 30, np.uint8)
    image[5:30, 5:35] = (220, 40, 40)
    image[20:45, 30:60] = (30, 200, 60)
    image = np.clip(image + rng.integers(0, 15, image.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), image[:, :, ::-1])
    return path


@pytest.fixture()
def images(tmp_path: Path, rng: np.random.Generator) -> list[Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    return [two_blobs(folder / f"im{i}.png", rng) for i in range(2)]


def test_ss_to_file(images: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert main(["proposals", str(images[0].parent), "--out", str(out)]) == 0
    entries = json.loads(out.read_text())
    assert [e["image_id"] for e in entries] == ["im0", "im1"]
    boxes = np.array(entries[0]["boxes"])
    assert boxes.shape[1] == 4 and len(boxes) == len(entries[0]["scores"]) == len(entries[0]["sources"]) > 0
    assert set(entries[0]["sources"]) == {"ss"}
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
    assert (boxes[:, 2] > boxes[:, 0]).all()


def test_stdout_and_limit(images: list[Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["proposals", str(images[0].parent), "--limit", "1", "--strategy", "single"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 1 and entries[0]["file"].endswith("im0.png")


def test_cache_is_reused(images: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["proposals", *map(str, images), "--cache", str(cache), "--out", str(out1), "--workers", "2"]) == 0
    (folder,) = cache.iterdir()
    assert folder.name.startswith("ss-") and sorted(p.name for p in folder.glob("*.pt")) == ["im0.pt", "im1.pt"]
    mtimes = [p.stat().st_mtime_ns for p in sorted(folder.glob("*.pt"))]
    assert main(["proposals", *map(str, images), "--cache", str(cache), "--out", str(out2)]) == 0
    assert [p.stat().st_mtime_ns for p in sorted(folder.glob("*.pt"))] == mtimes
    assert json.loads(out1.read_text()) == json.loads(out2.read_text())
    # another config (superpixel scale) gets its own folder
    assert main(["proposals", str(images[0]), "--cache", str(cache), "--superpixel-scale", "2",
                 "--out", str(out2)]) == 0
    assert len(list(cache.iterdir())) == 2


def test_paper_method_with_a_multibox_checkpoint(images: list[Path], tmp_path: Path) -> None:
    from proposals.multibox import MultiBoxConfig, build_multibox, save_multibox

    priors = torch.tensor([[0.0, 0.0, 0.5, 0.6], [0.5, 0.4, 1.0, 1.0], [0.1, 0.1, 0.9, 0.9]])
    weights = tmp_path / "mb.pt"
    save_multibox(weights, build_multibox(priors, MultiBoxConfig(num_priors=3, input_size=64)))
    out = tmp_path / "p.json"
    assert main(["proposals", str(images[0]), "--method", "paper", "--weights", str(weights), "--top-k", "2",
                 "--out", str(out)]) == 0
    (entry,) = json.loads(out.read_text())
    sources = entry["sources"]
    assert sources[:2] == ["multibox", "multibox"] and set(sources[2:]) == {"ss"}
    assert main(["proposals", str(images[0]), "--method", "multibox", "--weights", str(weights),
                 "--out", str(out)]) == 0
    (entry,) = json.loads(out.read_text())
    assert entry["sources"] == ["multibox"] * 3 and entry["scores"] == sorted(entry["scores"], reverse=True)


@pytest.mark.parametrize("argv, message", [
    (["missing.png"], "missing.png: no such file or folder"),
    (["--method", "multibox", "IMG"], "--method multibox needs --weights"),
    (["IMG", "--gt"], "--gt needs --annotations"),
    ([], "give image files/folders or --annotations"),
    (["IMG", "--dedupe-iou", "0"], "--dedupe-iou must be in (0, 1]"),
    (["IMG", "--method", "paper", "--weights", "nothere.pt"], "nothere.pt: no such file"),
])
def test_bad_input_is_one_line_exit_2_no_file(argv: list[str], message: str, images: list[Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.json"
    argv = [str(images[0]) if a == "IMG" else a for a in argv]
    assert main(["proposals", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("detect: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_corrupt_image_midway_is_skipped(images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An unreadable image is one line and skipped (exit 1); the others are written; --strict stops (exit 2)."""
    clean = tmp_path / "clean.json"
    assert main(["proposals", str(images[0]), "--out", str(clean)]) == 0
    bad = images[0].parent / "im1.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out.json"
    assert main(["proposals", str(images[0].parent), "--out", str(out), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "detect: error: " in err and "im1.png: not a readable image" in err and "1 skipped" in err
    assert out.read_bytes() == clean.read_bytes()
    out.unlink()
    assert main(["proposals", str(images[0].parent), "--out", str(out), "--strict"]) == 2
    assert not out.exists() and not list(tmp_path.glob(".out.json*"))


def test_streams_json_to_stdout_and_globs(images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(images[0].parent)
    assert main(["proposals", "*.png", "--strategy", "single"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["file"] for e in entries] == ["im0.png", "im1.png"]
    listing = tmp_path / "l.txt"
    listing.write_text("imgs/im1.png\n")
    assert main(["proposals", f"@{listing}", "--strategy", "single"]) == 0
    assert [e["image_id"] for e in json.loads(capsys.readouterr().out)] == ["im1"]


def test_kill_then_resume_equals_uninterrupted(images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from detect.commands import proposals as command

    clean = tmp_path / "clean.json"
    args = ["proposals", str(images[0].parent), "--strategy", "single"]
    assert main([*args, "--out", str(clean)]) == 0
    out = tmp_path / "out.json"
    original = command._propose_one
    calls = []

    def dies_at_second(job):
        calls.append(job[1].file)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(job)

    monkeypatch.setattr(command, "_propose_one", dies_at_second)
    assert main([*args, "--out", str(out)]) == 130
    assert "interrupted after 1 of 2 images" in capsys.readouterr().err and not out.exists()
    calls.clear()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert calls == [str(images[1])]
    assert out.read_bytes() == clean.read_bytes()


@pytest.mark.parametrize("target", ["weights", "image", "list"])
def test_output_over_an_input_is_refused_before_work(target: str, images: list[Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "mb.pt"
    weights.write_bytes(b"a checkpoint the user owns")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images[0]}\n")
    out = {"weights": weights, "image": images[0], "list": listing}[target]
    before = {p: p.read_bytes() for p in (weights, images[0], listing)}
    assert main(["proposals", f"@{listing}", "--method", "paper", "--weights", str(weights), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "would overwrite an input file" in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in before} == before


def test_coco128_with_gt(coco128: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.json"
    assert main(["proposals", "--annotations", str(coco128["annotations"]), "--images", str(coco128["images"]),
                 "--limit", "2", "--strategy", "single", "--gt", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "method ss" and lines[1].split()[:4] == ["images", "gt", "boxes", "boxes/img"]
    values = lines[2].split()
    assert values[0] == "2" and int(values[1]) > 0
    recall_50 = float(values[3])
    assert 0.3 <= recall_50 <= 1.0  # selective search covers most COCO boxes at IoU 0.5
    entries = json.loads(out.read_text())
    assert [e["image_id"] for e in entries] == [9, 25]  # COCO's own ids
