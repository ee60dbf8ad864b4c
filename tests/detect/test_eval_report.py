"""`detect eval` output people read: named fractions, the per-class table, the figures and confusion matrix,
the cut-results warning, and a --results path that runs without torch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detect.cli import main
from detect.evaluation.cocoeval import DetectionBoxes, GroundTruthBoxes
from detect.evaluation.confusion import confusion_matrix
from detect.evaluation.report import cut_results_warning

REPO = Path(__file__).resolve().parents[2]


def write_gt(tmp_path: Path) -> Path:
    """Two images, classes cat (id 1, 2 boxes + 1 crowd) and dog (id 3, 1 box), bird (id 4) without boxes."""
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 200},
                     {"id": 2, "file_name": "b.jpg", "width": 200, "height": 200}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 50, 50], "area": 2500,
                           "iscrowd": 0},
                          {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 80, 80], "area": 6400, "iscrowd": 0},
                          {"id": 4, "image_id": 2, "category_id": 1, "bbox": [120, 120, 70, 70], "area": 4900,
                           "iscrowd": 1}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 4, "name": "bird"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


DETS = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.9},      # cat right
        {"image_id": 1, "category_id": 3, "bbox": [100, 100, 50, 50], "score": 0.8},  # cat called dog
        {"image_id": 2, "category_id": 3, "bbox": [150, 0, 40, 40], "score": 0.7},    # false alarm
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 80, 80], "score": 0.05},     # dog right, below 0.25
        {"image_id": 2, "category_id": 1, "bbox": [120, 120, 70, 70], "score": 0.6}]  # on the crowd


def run_eval(tmp_path: Path, dets: list[dict], *extra: str) -> int:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    return main(["eval", "--annotations", str(write_gt(tmp_path)), "--results", str(path), *extra])


def test_console_shows_named_fractions_and_a_sorted_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_eval(tmp_path, DETS, "--out", str(tmp_path / "ev")) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    lines = out.splitlines()
    for name, value in summary["metrics"].items():  # every summary.json name, its value as a fraction
        shown = "-1 (undefined: no ground truth)" if value < 0 else f"{value:.4f}"
        assert f"{name:<5}  {shown}" in lines
    assert "%" not in out
    header = next(i for i, line in enumerate(lines) if line.startswith("class"))
    assert lines[header].split() == ["class", "AP", "AP50", "gt", "dets"]
    table = [line.split() for line in lines[header + 1:]]
    assert [row[0] for row in table] == ["cat", "dog", "bird"]  # AP 0.505 (1 of 2 boxes), 0.33 (third), none
    assert table[0][3:] == ["2", "2"] and table[1][3:] == ["1", "3"] and table[2] == ["bird", "-", "-", "0", "0"]
    assert [r["class"] for r in summary["per_class"]] == ["cat", "dog", "bird"]
    assert summary["per_class"][0] == {"class": "cat", "AP": summary["per_class_AP"]["cat"],
                                       "AP50": pytest.approx(0.5, abs=0.01), "gt": 2, "dets": 2}


def test_plots_overview_per_class_and_confusion(tmp_path: Path) -> None:
    assert run_eval(tmp_path, DETS, "--out", str(tmp_path / "ev"), "--plots") == 0
    plots = sorted(p.name for p in (tmp_path / "ev" / "plots").iterdir())
    assert plots == ["confusion.png", "pr_001_cat.png", "pr_002_dog.png", "pr_all.png", "pr_overview.png"]
    with open(tmp_path / "ev" / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", "cat", "dog", "bird", "background"]
    counts = {r[0]: [int(v) for v in r[1:]] for r in rows[1:]}
    # cat: one right, one called dog; dog: its detection scores 0.05 < 0.25, so missed; one false alarm (dog);
    # the detection on the crowd counts nowhere
    assert counts == {"cat": [1, 1, 0, 0], "dog": [0, 0, 0, 1], "bird": [0, 0, 0, 0], "background": [0, 1, 0, 0]}


def test_overview_keeps_best_and_worst_when_many_classes(tmp_path: Path) -> None:
    from detect.evaluation.plots import plot_pr_overview

    rec = np.linspace(0, 1, 101)
    curves = [(f"c{k}", rec, np.full(101, k / 40), k / 40) for k in range(40)]
    path = plot_pr_overview(tmp_path / "o.png", curves, title="t", max_classes=20)
    assert path.stat().st_size > 0


def test_confusion_matrix_greedy_by_iou() -> None:
    """Class-agnostic pairing by decreasing IoU: the better-overlapping detection takes the box."""
    gt = GroundTruthBoxes(np.array([0, 0]), np.array([0, 1]), np.array([[0.0, 0, 10, 10], [20, 0, 10, 10]]),
                          np.array([100.0, 100.0]), np.array([False, False]), np.array([False, False]))
    dt = DetectionBoxes(np.array([0, 0, 0]), np.array([1, 0, 0]),
                        np.array([[0.0, 0, 10, 9], [0, 0, 10, 10], [40, 40, 5, 5]]), np.array([0.9, 0.5, 0.1]))
    m = confusion_matrix(gt, dt, 2)
    assert m.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]  # the 0.1 detection is below the score floor


@pytest.mark.parametrize("scores, per_image, warn", [
    (np.full(300, 0.3), [3] * 100, True),           # cut at 0.3, images far from 100 detections
    (np.linspace(0.01, 1, 300), [3] * 100, False),  # the low tail is there
    (np.full(10000, 0.3), [100] * 100, False),      # every image full: the cap cut it, not a score
    (np.zeros(0), [], False),                       # nothing to judge
])
def test_cut_results_rule(scores: np.ndarray, per_image: list[int], warn: bool) -> None:
    image = np.repeat(np.arange(len(per_image)), per_image)
    assert (cut_results_warning(scores, image, max(len(per_image), 1)) is not None) == warn


def test_eval_warns_once_on_cut_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_eval(tmp_path, [d for d in DETS if d["score"] >= 0.2]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "look cut" in line]
    assert len(warnings) == 1 and "dets.json: the results look cut at a score threshold" in warnings[0]
    assert run_eval(tmp_path, DETS) == 0  # lowest score 0.05
    assert "look cut" not in capsys.readouterr().err


BLOCK_TORCH = """
import argparse, importlib.abc, sys, types
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "matplotlib", "pycocotools"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
# the packages' __init__ files import the models (torch); what is tested here is the eval path's own modules
for pkg in ("backbone", "detect"):
    module = types.ModuleType(pkg)
    module.__path__ = [sys.argv[1] + "/" + pkg]
    sys.modules[pkg] = module
from detect.commands import evaluate
parser = argparse.ArgumentParser()
evaluate.add_arguments(parser)
code = evaluate.main(parser.parse_args(sys.argv[2:]))
print("torch loaded:", "torch" in sys.modules)
sys.exit(code)
"""


def test_results_path_needs_no_torch(tmp_path: Path) -> None:
    """`detect eval --results` on COCO JSON with --out (summary, confusion.csv) while torch, torchvision,
    matplotlib and pycocotools cannot be imported."""
    gt = write_gt(tmp_path)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(DETS))
    proc = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(REPO), "--annotations", str(gt), "--results",
                           str(dets), "--out", str(tmp_path / "ev")], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "torch loaded: False" in proc.stdout and "AP50" in proc.stdout
    assert (tmp_path / "ev" / "confusion.csv").exists() and (tmp_path / "ev" / "summary.json").exists()
