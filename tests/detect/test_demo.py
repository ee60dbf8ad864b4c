"""`detect demo` runs offline from the installed package: draws, trains, evaluates, draws detections, and
says where each file went; a second run reuses the data and the model instead of redoing them."""

from __future__ import annotations

import json

import cv2
import pytest

from detect.cli import main


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")          # no download may be attempted
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # and no ImageNet file is there to find
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--train-images", "8", "--test-images", "2", "--epochs", "1",
            "--vis-images", "2", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in printed
    for path in (out / "data" / "train.json", out / "data" / "test.json", out / "model" / "model.pt",
                 out / "model" / "metrics.csv", out / "eval" / "summary.json"):
        assert path.is_file(), path
        assert str(path) in printed or str(path.parent) in printed
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["images"] == 2 and 0.0 <= summary["metrics"]["AP50"] <= 1.0
    assert sorted(p.name for p in (out / "eval" / "plots").glob("*.png"))  # precision-recall curves
    drawn = sorted((out / "vis").glob("*.jpg"))
    assert len(drawn) == 2 and cv2.imread(str(drawn[0])) is not None
    train = json.loads((out / "data" / "train.json").read_text())
    test = json.loads((out / "data" / "test.json").read_text())
    assert {c["name"] for c in train["categories"]} == {"disc", "triangle", "cross"}
    assert not {im["photo"] for im in train["images"]} & {im["photo"] for im in test["images"]}

    before = (out / "model" / "model.pt").stat().st_mtime_ns
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "reusing the images" in again and "reusing" in again.split("[2/4]")[1].split("[3/4]")[0]
    assert (out / "model" / "model.pt").stat().st_mtime_ns == before
