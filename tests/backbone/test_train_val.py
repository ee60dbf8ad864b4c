"""`backbone train --val DIR`: top-1/top-5 per epoch as `backbone eval --crops 1` gives them, best.pt by top-1.

Tiny from-scratch runs (paper variant, 32-px inputs, 2 classes, batches of 2, one CPU thread): what is
checked is the wiring, not accuracy. The numbers recorded per epoch must equal what `backbone eval`
reports for the saved files (model.pt = last epoch, best.pt = best epoch), and validating must not change
the trained weights.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from backbone.cli import main as backbone_main
from backbone.multicrop import evaluate_multicrop


def _folder(root: Path, classes=("cat", "dog"), per_class=4, size=36, seed=0) -> Path:
    """Class ``c`` is noise plus a bright patch at a class-specific place, so accuracy can move."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = (rng.random((size, size + 4, 3)) * 120).astype(np.uint8)
            img[4 + 16 * c: 16 + 16 * c, 6:30] = 230
            cv2.imwrite(str(root / name / f"{i}.png"), img)
    return root


def _train(tmp_path: Path, out: str, *extra: str) -> int:
    data = _folder(tmp_path / "data")
    return backbone_main(["train", "--data", str(data), "--out", str(tmp_path / out), "--image-size", "32",
                          "--batch-size", "2", "--workers", "0", "--polyak", "0.5", "--lr", "0.02",
                          "--device", "cpu", *extra])


def _eval_top1(tmp_path: Path, weights: Path, val: Path) -> float:
    out = tmp_path / f"{weights.parent.name}-{weights.stem}.json"
    assert backbone_main(["eval", "--data", str(val), "--weights", str(weights), "--workers", "0",
                          "--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())["top1"]


def test_val_metrics_per_epoch_equal_backbone_eval_and_best_pt_is_the_best(tmp_path, capsys, monkeypatch):
    import backbone.multicrop

    calls = []  # what validation asked backbone eval's code for: the scheme and the preprocessing

    def recording(models, preprocessings, samples, **kwargs):
        calls.append((kwargs["crops"], [p.to_dict() for p in preprocessings], len(samples)))
        return evaluate_multicrop(models, preprocessings, samples, **kwargs)

    monkeypatch.setattr(backbone.multicrop, "evaluate_multicrop", recording)  # the command imports it at run time
    val = _folder(tmp_path / "val", classes=("dog",), per_class=6, seed=1)  # top-1 = share called "dog"
    assert _train(tmp_path, "run", "--epochs", "3", "--val", str(val)) == 0
    out = tmp_path / "run"
    checkpoint_preprocessing = torch.load(out / "model.pt", weights_only=True)["preprocessing"]
    assert calls == [(1, [checkpoint_preprocessing], 6)] * 3
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    top1 = [r["val_top1"] for r in records]
    assert len(top1) == 3 and all(r["val_top5"] == 1.0 for r in records)  # 2 classes: top-5 holds both
    assert all(r["images_per_s"] == r["samples_per_s"] > 0 for r in records)
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert [float(r["val_top1"]) for r in rows] == [float(f"{v:.6g}") for v in top1]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = torch.load(out / "last.pt", weights_only=True)["best"]
    assert best == {"metric": "val_top1", "value": max(top1), "epoch": top1.index(max(top1)) + 1}
    stdout = capsys.readouterr().out
    assert f"best.pt: epoch {best['epoch']}, val_top1" in stdout
    capsys.readouterr()
    assert _eval_top1(tmp_path, out / "model.pt", val) == top1[-1]  # model.pt = the last epoch's average
    assert _eval_top1(tmp_path, out / "best.pt", val) == max(top1)
    if best["epoch"] != 3:  # (with these settings: 0.0, 1.0, 1.0 -> epoch 2) best.pt is not the final model
        a, b = (torch.load(out / name, weights_only=True)["model"] for name in ("best.pt", "model.pt"))
        assert any(not torch.equal(a[k], b[k]) for k in a)


def test_validation_does_not_change_the_trained_weights(tmp_path):
    val = _folder(tmp_path / "val", per_class=2, seed=1)
    assert _train(tmp_path, "with", "--epochs", "2", "--val", str(val)) == 0
    assert _train(tmp_path, "without", "--epochs", "2") == 0
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True)["model"] for d in ("with", "without"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "without" / "best.pt").exists()


def test_val_folder_with_an_unknown_class_is_one_line(tmp_path, capsys):
    val = _folder(tmp_path / "val", classes=("cat", "eel"), per_class=1)
    assert _train(tmp_path, "run", "--epochs", "1", "--val", str(val)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("backbone: error:")]
    assert len(err) == 1 and "1 class folders (eel) are not among the 2 classes of --data" in err[0]
