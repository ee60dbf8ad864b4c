"""The ILSVRC 2014 reproduction recipe (``scripts/reproduce_ilsvrc2014.sh``) runs end to end and resumes.

A tiny set in the ILSVRC DET layout (coloured shapes on textured backgrounds, three WordNet ids of the 200
DET classes, train in per-class subfolders as the devkit ships it, val split by R-CNN-style val1/val2 lists
whose second column numbers images within the split) goes through the very script file with tiny settings
(CPU, random init, 32 px crops, 1 epoch, 2 models, a small MultiBox). Checked: every step's output, a
finite mAP in the evaluation summaries, the devkit indices of val2 (so the blacklist hits the right
image), and that a second run skips every step.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.datasets import ILSVRC_DET200, read_synsets

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "reproduce_ilsvrc2014.sh"

WNIDS = read_synsets(ILSVRC_DET200)[0][:3]  # three of the 200 DET classes (accordion, airplane, ant)
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230)]  # one colour (and shape) per class, RGB


def _image(rng: np.random.Generator, cls: list[int], size=(96, 72)) -> tuple[np.ndarray, list[list[int]]]:
    """A textured background with one shape per entry of ``cls``; returns (RGB image, 1-based boxes)."""
    w, h = size
    base = rng.integers(60, 200, size=3)
    img = (base + rng.normal(0, 18, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
    boxes = []
    for c in cls:
        bw, bh = int(rng.integers(26, 44)), int(rng.integers(22, 36))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        colour = tuple(int(v) for v in COLOURS[c])
        if c == 0:
            cv2.rectangle(img, (x1, y1), (x1 + bw - 1, y1 + bh - 1), colour, -1)
        elif c == 1:
            cv2.ellipse(img, (x1 + bw // 2, y1 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, colour, -1)
        else:
            pts = np.array([[x1 + bw // 2, y1], [x1, y1 + bh - 1], [x1 + bw - 1, y1 + bh - 1]], np.int32)
            cv2.fillPoly(img, [pts], colour)
        boxes.append([x1 + 1, y1 + 1, x1 + bw, y1 + bh])  # devkit: 1-based inclusive
    return img, boxes


def _write(root: Path, split: str, name: str, img: np.ndarray, cls: list[int], boxes: list[list[int]]) -> None:
    jpg = root / "Data" / "DET" / split / f"{name}.JPEG"
    jpg.parent.mkdir(parents=True, exist_ok=True)
    jpg.write_bytes(cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes())
    objects = "".join(
        f"<object><name>{WNIDS[c]}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for c, b in zip(cls, boxes))
    xml = root / "Annotations" / "DET" / split / f"{name}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(f"<annotation><folder>{split}</folder><filename>{Path(name).name}</filename><size>"
                   f"<width>{img.shape[1]}</width><height>{img.shape[0]}</height></size>{objects}</annotation>")


def make_tiny_ilsvrc(root: Path, *, seed: int = 0) -> dict[str, Path]:
    """Train: 2 images per class under ``ILSVRC2013_train/<wnid>/``; val: 6 images, val1 = 3, val2 = 3."""
    rng = np.random.default_rng(seed)
    for c, wnid in enumerate(WNIDS):
        for k in range(2):
            cls = [c] if k == 0 else [c, (c + 1) % 3]
            img, boxes = _image(rng, cls)
            _write(root, "train", f"ILSVRC2013_train/{wnid}/{wnid}_{k + 1}", img, cls, boxes)
    val = [f"ILSVRC2013_val_{i:08d}" for i in range(1, 7)]
    for i, name in enumerate(val):
        cls = [i % 3] if i < 3 else [i % 3, (i + 1) % 3]
        img, boxes = _image(rng, cls)
        _write(root, "val", name, img, cls, boxes)
    sets = root / "ImageSets" / "DET"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(val, start=1)))
    rcnn = root / "rcnn"  # R-CNN's lists number the images within the split
    rcnn.mkdir()
    (rcnn / "val1.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(val[0::2], start=1)))
    (rcnn / "val2.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(val[1::2], start=1)))
    blacklist = root / "devkit" / "data" / "ILSVRC2014_det_validation_blacklist.txt"
    blacklist.parent.mkdir(parents=True)
    blacklist.write_text(f"6 {WNIDS[0]}\n")  # val.txt index 6 = val2's third image
    return {"val1": rcnn / "val1.txt", "val2": rcnn / "val2.txt"}


def _run(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_recipe_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "ILSVRC"
    lists = make_tiny_ilsvrc(data)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "DATA_ROOT": str(data), "OUT_ROOT": str(out), "VAL1_LIST": str(lists["val1"]),
           "VAL2_LIST": str(lists["val2"]), "DEVICE": "cpu", "NPROC": "1", "WORKERS": "0",
           "PROPOSAL_WORKERS": "1", "BACKBONE": "none", "NUM_MODELS": "2", "EPOCHS": "1", "CROP_SIZE": "32",
           "PADDING": "2", "BATCH_SIZE": "32", "MB_EPOCHS": "1", "MB_PRIORS": "8", "MB_INPUT_SIZE": "64",
           "MB_BATCH": "4", "MB_TOP_K": "20", "SUPERPIXEL_SCALE": "8", "DETECT_BATCH": "256",
           "COMPILE": "0"}  # superpixels x8: ~210 instead of ~830 boxes per image, 4x fewer crops

    start = time.perf_counter()
    first = _run(env, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    first_s = time.perf_counter() - start

    outputs = [out / "splits" / ".done", out / "multibox" / "model.pt", out / "rc1" / "model.pt",
               out / "rc2" / "model.pt", out / "val2" / "single.json", out / "val2" / "ensemble.json",
               out / "val2" / "eval_single" / "summary.json", out / "val2" / "eval_ensemble" / "summary.json",
               out / "results.txt"]
    outputs += [out / "proposals" / f"{s}.recall.txt" for s in ("train", "val1", "val2")]
    for path in outputs:
        assert path.exists(), f"{path} missing after the first run"
    assert not (out / "rc3").exists()  # NUM_MODELS=2
    assert len(list((out / "proposals").glob("paper-*/"))) == 1  # one cache for every split

    # val2 carries the devkit's val.txt indices (2, 4, 6), not R-CNN's positions (1, 2, 3)
    assert (out / "splits" / "val2.txt").read_text().split() == [
        "ILSVRC2013_val_00000002", "2", "ILSVRC2013_val_00000004", "4", "ILSVRC2013_val_00000006", "6"]
    ensemble = json.loads((out / "val2" / "ensemble.run.json").read_text())
    assert len(ensemble["weights"]) == 2
    for name in ("single", "ensemble"):
        summary = json.loads((out / "val2" / f"eval_{name}" / "summary.json").read_text())
        assert summary["metric"] == "ilsvrc" and summary["images"] == 3
        assert math.isfinite(summary["metrics"]["mAP"]) and 0.0 <= summary["metrics"]["mAP"] <= 1.0
    results = (out / "results.txt").read_text()
    assert "43.9 %" in results and "38.02 %" in results and "93 %" in results
    # coverage = val2's recall@0.5 (columns: images, gt boxes, boxes/img, recall@0.5, ...)
    recall_50 = float((out / "proposals" / "val2.recall.txt").read_text().splitlines()[-1].split()[3])
    coverage = next(line for line in results.splitlines() if line.startswith("proposal coverage"))
    assert coverage.split()[-2] == f"{100 * recall_50:.1f}"

    mtimes = {p: p.stat().st_mtime_ns for p in outputs if p.name != "results.txt"}
    second = _run(env, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    skipped = [line for line in second.stdout.splitlines() if line.startswith("== skip:")]
    # splits, multibox, 3 proposal tables, 2 models, 2 detections, 2 evaluations
    assert len(skipped) == 11, second.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    print(f"first run {first_s:.1f} s")
