"""`detect eval --weights` over a data set as `detect run` over a folder (issue 12 part 1): a bad image is one
stderr line and skipped (exit 1, metrics of the images done), --strict, nothing written when nothing was done,
per-image results on disk with kill + --resume ending in the same summary.json, outputs refused before any
model loads; and --classes for both --results and --weights.

A stand-in detector (``load_detector`` patched) reads each image for real and answers the ground truth's
boxes, so these run in a second; the real pipeline is in test_eval_cli.py and test_sharded_eval.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect.pipeline
from detect.cli import main
from detect.datasets import read_coco
from detect.pipeline import DetectorConfig, ImageOutcome, ImageResult
from detect.structures import Detections


class FakeDetector:
    """Reads each image (real errors for bad files) and detects exactly its ground-truth boxes (score 0.9);
    ``interrupt_at`` raises KeyboardInterrupt before that (1-based) image; ``seen`` lists the files done."""

    def __init__(self, gt: Path, config: DetectorConfig, *, interrupt_at: int | None = None,
                 category_ids: list | None = None) -> None:
        self.dataset = read_coco(gt)
        self.config = config
        self.multibox = None
        self.class_names = list(self.dataset.class_names)
        self.classifier = type("C", (), {"category_ids": category_ids or list(self.dataset.category_ids)})()
        self.interrupt_at = interrupt_at
        self.seen: list[str] = []

    def detect_each(self, items, *, workers=1):
        from backbone.errors import InputError
        from backbone.inputs import read_input

        by_file = {r.file.name: r for r in self.dataset.records}
        for n, item in enumerate(items, start=1):
            if n == self.interrupt_at:
                raise KeyboardInterrupt
            try:
                image = read_input(item)
            except InputError as err:
                yield ImageOutcome(item, error=err)
                continue
            self.seen.append(Path(item).name)
            r = by_file[Path(item).name]
            keep = torch.ones(len(r.labels), dtype=torch.bool)
            if self.config.classes:
                keep = torch.isin(r.labels, torch.tensor(self.config.classes))
            dets = Detections(r.boxes[keep], torch.full((int(keep.sum()),), 0.9), r.labels[keep])
            yield ImageOutcome(item, ImageResult(item, image.shape[1], image.shape[0], dets, 10), image)


def write_set(root: Path, n: int = 3) -> Path:
    """``n`` 64x48 images with one or two boxes each (classes cat id 1, dog id 3); returns the COCO file."""
    imgs = root / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for k in range(1, n + 1):
        name = f"{k:04d}.png"
        cv2.imwrite(str(imgs / name), np.full((48, 64, 3), 40 * k, np.uint8))
        images.append({"id": k, "file_name": name, "width": 64, "height": 48})
        anns.append({"id": 2 * k, "image_id": k, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400, "iscrowd": 0})
        if k % 2:
            anns.append({"id": 2 * k + 1, "image_id": k, "category_id": 3, "bbox": [30, 10, 25, 30], "area": 750,
                         "iscrowd": 0})
    gt = root / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]}))
    return gt


@pytest.fixture()
def fake(monkeypatch):
    """Patch ``load_detector``; ``fake.made`` holds the detectors built (none: no model was loaded)."""
    state = type("State", (), {"made": [], "kwargs": {}})()

    def load_detector(weights, config, *, multibox_weights=None, device="auto"):
        detector = FakeDetector(state.gt, config, **state.kwargs)
        state.made.append(detector)
        return detector

    monkeypatch.setattr(detect.pipeline, "load_detector", load_detector)
    return state


def run_eval(gt: Path, out: Path | None, *extra: str, weights: Path | None = None) -> int:
    ckpt = weights or gt  # any existing file: the fake detector never opens it
    argv = ["eval", "--annotations", str(gt), "--images", str(gt.parent / "imgs"), "--weights", str(ckpt),
            "--device", "cpu", "--fast", *extra]
    return main(argv + (["--out", str(out)] if out is not None else []))


@pytest.fixture()
def clean(tmp_path, fake) -> dict:
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    assert run_eval(gt, tmp_path / "clean") == 0
    return {"gt": gt, "summary": (tmp_path / "clean" / "summary.json").read_bytes(),
            "detections": (tmp_path / "clean" / "detections.json").read_bytes()}


def test_weights_branch_evaluates_what_the_detector_found(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    assert run_eval(gt, tmp_path / "ev") == 0
    out, err = capsys.readouterr()
    assert "AP50   1.0000\n" in out and "coco evaluation of 5 detections on 3 images" in out
    assert "detect eval: 3 images of " in err and "device cpu" in err and "3 of 3 images" in err
    written = json.loads((tmp_path / "ev" / "detections.json").read_text())
    assert [d["image_id"] for d in written] == [1, 1, 2, 3, 3]
    assert written[0] == {"image_id": 1, "category_id": 1, "bbox": [2.0, 2.0, 20.0, 20.0], "score": pytest.approx(0.9)}
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["images"] == 3 and "skipped" not in summary and "seconds" not in summary
    info = json.loads((tmp_path / "ev" / "detections.run.json").read_text())
    assert info["images"] == 3 and info["skipped"] == [] and info["config"]["fast"] is True
    assert not (tmp_path / "ev" / "detections.json.parts").exists()


def test_without_out_nothing_is_kept_on_disk(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    assert run_eval(gt, None) == 0
    assert "AP50   1.0000\n" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_bad_images_are_skipped_and_left_out_of_the_metrics(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set", 4)
    fake.gt = gt
    png = (gt.parent / "imgs" / "0002.png").read_bytes()
    (gt.parent / "imgs" / "0002.png").write_bytes(png[: len(png) // 2])  # truncated
    (gt.parent / "imgs" / "0004.png").write_text("not an image")
    assert run_eval(gt, tmp_path / "ev") == 1
    out, err = capsys.readouterr()
    bad = [l for l in err.splitlines() if l.startswith("detect: error: ")]
    assert len(bad) == 2 and "0002.png: " in bad[0] and "0004.png: not a readable image" in bad[1]
    assert "2 of 4 images" in err and "2 skipped, listed above" in err
    assert "AP     1.0000\n" in out and "on 2 images" in out  # the metrics of the images done
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["images"] == 2 and [Path(s["input"]).name for s in summary["skipped"]] == ["0002.png", "0004.png"]
    assert {d["image_id"] for d in json.loads((tmp_path / "ev" / "detections.json").read_text())} == {1, 3}


def test_strict_stops_at_the_first_bad_image(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    (gt.parent / "imgs" / "0002.png").write_text("not an image")
    assert run_eval(gt, tmp_path / "ev", "--strict") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("detect: error: ") and "0002.png: not a readable image" in err
    assert fake.made[0].seen == ["0001.png"] and not (tmp_path / "ev" / "summary.json").exists()


def test_no_image_processed_writes_nothing(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set", 2)
    fake.gt = gt
    for p in (gt.parent / "imgs").iterdir():
        p.write_text("no")
    assert run_eval(gt, tmp_path / "ev") == 2
    assert "0 of 2 images" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "ev").iterdir() if p.name != "detections.json.parts"]


def test_kill_then_resume_gives_the_same_summary(tmp_path, fake, clean, capsys):
    out = tmp_path / "ev"
    fake.made.clear()
    fake.kwargs = {"interrupt_at": 3}
    assert run_eval(clean["gt"], out) == 130
    err = capsys.readouterr().err
    assert "detect: interrupted after 2 of 3 images" in err and "--resume" in err and "Traceback" not in err
    assert not (out / "summary.json").exists()
    (part,) = (out / "detections.json.parts").glob("rank*.jsonl")
    assert len(part.read_text().splitlines()) == 2
    fake.kwargs = {}
    assert run_eval(clean["gt"], out, "--resume") == 0
    assert fake.made[-1].seen == ["0003.png"], "only the image not done before is processed"
    assert "2 done earlier: resuming" in capsys.readouterr().err
    assert (out / "summary.json").read_bytes() == clean["summary"]
    assert (out / "detections.json").read_bytes() == clean["detections"]
    assert not (out / "detections.json.parts").exists()


def test_resume_refusals(tmp_path, fake, clean, capsys):
    out = tmp_path / "ev"
    assert run_eval(clean["gt"], out, "--resume") == 2
    assert "--resume: no partial results" in capsys.readouterr().err
    fake.kwargs = {"interrupt_at": 2}
    assert run_eval(clean["gt"], out) == 130
    fake.kwargs = {}
    assert run_eval(clean["gt"], out, "--proposals", "ss", "--resume") == 2
    assert "--resume: the earlier run differs in config" in capsys.readouterr().err.strip().splitlines()[-1]
    assert run_eval(clean["gt"], None, "--resume") == 2
    assert "--resume needs --out" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["over_annotations", "over_weights", "out_is_a_file", "unwritable"])
def test_outputs_refused_before_any_model_loads(tmp_path, fake, capsys, case):
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    weights = tmp_path / "rc.pt"
    weights.write_bytes(b"x")
    out = tmp_path / "ev"
    if case == "over_annotations":  # --out holding the ground truth as summary.json
        out.mkdir()
        (out / "summary.json").write_text(gt.read_text())
        gt = out / "summary.json"
        (out / "imgs").symlink_to(tmp_path / "set" / "imgs")
    elif case == "over_weights":
        out.mkdir()
        (out / "detections.json").symlink_to(weights)
    elif case == "out_is_a_file":
        out = weights
    else:
        out = Path("/sys/detect-eval-test")  # read-only for root too
    code = run_eval(gt, out, weights=weights)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("detect: error: "), err
    assert not fake.made
    assert weights.read_bytes() == b"x"


def test_model_for_other_classes_is_one_line(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    fake.kwargs = {"category_ids": [1, 2, 3]}
    assert run_eval(gt, tmp_path / "ev") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([l for l in err if l.startswith("detect: error: ")]) == 1
    assert "the model's classes (3: 1, 2, 3, ...) do not fit the ground truth's 2 classes" in err[-1]


def test_classes_with_weights_detect_and_evaluate_only_those(tmp_path, fake, capsys):
    gt = write_set(tmp_path / "set")
    fake.gt = gt
    assert run_eval(gt, tmp_path / "ev", "--classes", "DOG") == 0
    out = capsys.readouterr().out
    assert fake.made[0].config.classes == (2,)  # label 2 = dog: the detector keeps only dogs
    assert "coco evaluation of 2 detections on 3 images (1 classes chosen by --classes" in out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert list(summary["per_class_AP"]) == ["dog"] and summary["classes"] == ["dog"]


def test_classes_with_results_equal_pycocotools_catIds(tmp_path, capsys):
    """Detections of two classes, one of them poor: --classes picks one; the numbers are pycocotools' with
    params.catIds restricted to it, by name and by id alike; an unknown class is one line."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = write_set(tmp_path, 4)
    dets = [{"image_id": k, "category_id": 1, "bbox": [2, 2, 20, 20], "score": 0.9} for k in (1, 2, 3)]
    dets += [{"image_id": k, "category_id": 3, "bbox": [35, 15, 25, 30], "score": 0.5 + 0.1 * k} for k in (1, 2, 3)]
    res = tmp_path / "dets.json"
    res.write_text(json.dumps(dets))
    coco = COCO(str(gt))
    for cats, wanted in [([3], ["dog"]), ([1], ["1"]), ([1, 3], ["cat", "3"])]:
        ev = COCOeval(coco, coco.loadRes(str(res)), "bbox")
        ev.params.catIds = cats
        ev.evaluate(), ev.accumulate(), ev.summarize()
        out_dir = tmp_path / f"ev{len(wanted)}{wanted[0]}"
        assert main(["eval", "--annotations", str(gt), "--results", str(res), "--classes", *wanted,
                     "--out", str(out_dir)]) == 0
        summary = json.loads((out_dir / "summary.json").read_text())
        assert list(summary["metrics"].values()) == pytest.approx(list(ev.stats), abs=1e-12), wanted
    # the data-set path (here the ILSVRC rule on COCO ground truth): the class's AP as in a full run, mAP = it
    assert main(["eval", "--annotations", str(gt), "--results", str(res), "--metric", "ilsvrc",
                 "--out", str(tmp_path / "all")]) == 0
    assert main(["eval", "--annotations", str(gt), "--results", str(res), "--metric", "ilsvrc", "--classes", "dog",
                 "--out", str(tmp_path / "dog")]) == 0
    full = json.loads((tmp_path / "all" / "summary.json").read_text())
    dog = json.loads((tmp_path / "dog" / "summary.json").read_text())
    assert dog["per_class_AP"] == {"dog": full["per_class_AP"]["dog"]} and dog["metrics"]["mAP"] == dog[
        "per_class_AP"]["dog"] != full["metrics"]["mAP"]
    capsys.readouterr()
    assert main(["eval", "--annotations", str(gt), "--results", str(res), "--classes", "horse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--classes 'horse': not a class name or category id" in err
