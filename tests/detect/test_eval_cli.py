"""`detect eval` end to end: printed metrics, summary.json, plots, one-line errors, the --weights branch with
the real pipeline (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detect.cli import main
from detect.datasets import read_coco
from detect.evaluation import evaluate_coco


def jittered_results(annotations: Path, rng: np.random.Generator) -> list[dict]:
    raw = json.loads(annotations.read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "bbox": [a["bbox"][0] + rng.normal(0, 2), a["bbox"][1] + rng.normal(0, 2),
                      a["bbox"][2] * rng.uniform(0.8, 1.2), a["bbox"][3] * rng.uniform(0.8, 1.2)],
             "score": float(rng.random())} for a in raw["annotations"]]


def test_eval_coco128_prints_and_writes_summary(coco128: dict[str, Path], tmp_path: Path, rng: np.random.Generator,
                                                capsys: pytest.CaptureFixture) -> None:
    results = jittered_results(coco128["annotations"], rng)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(results))
    rc = main(["eval", "--annotations", str(coco128["annotations"]), "--results", str(dets),
               "--out", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert rc == 0
    expected = evaluate_coco(read_coco(coco128["annotations"]), results)
    assert f"AP     {expected.AP:.4f}\n" in out and f"AR100  {expected.AR100:.4f}\n" in out and "person" in out
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["metric"] == "coco" and summary["images"] == 128 and summary["detections"] == len(results)
    assert summary["metrics"] == expected.stats() and summary["per_class_AP"] == expected.per_class_AP
    assert not list((tmp_path / "eval").glob(".*tmp"))  # atomic writes leave no temporaries


def write_tiny_coco(tmp_path: Path) -> Path:
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}],
          "categories": [{"id": 5, "name": "kite"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.mark.parametrize("gt_text, dets_text, problem", [
    ("{broken", "[]", "gt.json: not valid JSON"),
    ('{"images": []}', "[]", "gt.json: not a COCO instances file: no 'annotations' field"),
    (None, '[{"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 0.5}]', "dets.json: entry 0 has "
     "category_id 7"),
    (None, '[{"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": NaN}]', "dets.json: entry 0 has "
     "score nan"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, gt_text, dets_text, problem) -> None:
    gt = write_tiny_coco(tmp_path)
    if gt_text is not None:
        gt.write_text(gt_text)
    dets = tmp_path / "dets.json"
    dets.write_text(dets_text)
    rc = main(["eval", "--annotations", str(gt), "--results", str(dets)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("detect: error: ") and problem in err and err.count("\n") == 1


def test_plots_need_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = write_tiny_coco(tmp_path)
    assert main(["eval", "--annotations", str(gt), "--results", str(gt), "--plots"]) == 2
    assert "--plots needs --out" in capsys.readouterr().err


def test_ilsvrc_xml_with_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ann = tmp_path / "Annotations"
    ann.mkdir()
    (ann / "v1.xml").write_text(
        "<annotation><size><width>100</width><height>80</height></size>"
        "<object><name>n02691156</name><bndbox><xmin>11</xmin><ymin>11</ymin><xmax>50</xmax><ymax>40</ymax>"
        "</bndbox></object></annotation>")
    (tmp_path / "val.txt").write_text("v1 1\n")
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": "v1", "category_id": "n02691156", "bbox": [10, 10, 40, 30], "score": 0.9},
                                {"image_id": "v1", "category_id": "n02691156", "bbox": [11, 10, 40, 30], "score": 0.8}]))
    rc = main(["eval", "--annotations", str(ann), "--image-set", str(tmp_path / "val.txt"), "--results", str(dets),
               "--out", str(tmp_path / "ev"), "--plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "ilsvrc evaluation of 2 detections on 1 images (200 classes" in out and "mAP  1.0000\n" in out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["metric"] == "ilsvrc" and summary["per_class_AP"]["airplane"] == 1.0
    assert summary["per_class_AP"]["accordion"] == -1.0
    assert sorted(p.name for p in (tmp_path / "ev" / "plots").iterdir()) == [  # label 2 of 200
        "confusion.png", "pr_002_airplane.png", "pr_overview.png"]
    # the same two detections as a devkit submission file (1-based inclusive boxes), with a blacklist
    sub = tmp_path / "dets.txt"
    sub.write_text("1 2 0.9 11 11 50 40\n1 2 0.8 12 11 51 40\n")
    (tmp_path / "blacklist.txt").write_text("1 n02672831\n")
    rc = main(["eval", "--annotations", str(ann), "--image-set", str(tmp_path / "val.txt"), "--results", str(sub),
               "--blacklist", str(tmp_path / "blacklist.txt")])
    assert rc == 0 and "mAP  1.0000\n" in capsys.readouterr().out


# the --weights branch with a stand-in detector (streaming, skips, resume, refusals): test_eval_stream.py


@pytest.mark.slow
def test_weights_branch_with_the_real_pipeline(coco128: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    """One coco128 image through the real detector with an untrained region classifier biased towards the
    image's classes: detections non-empty, and metrics equal to evaluating the written detections.json, with
    `detect eval --results` and with pycocotools directly."""
    from detect.classifier import RegionClassifier

    raw = json.loads(coco128["annotations"].read_text())
    image = raw["images"][0]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [image], "categories": raw["categories"],
                              "annotations": [a for a in raw["annotations"] if a["image_id"] == image["id"]]}))
    cats = sorted(raw["categories"], key=lambda c: c["id"])
    model = RegionClassifier.from_backbone([c["name"] for c in cats], weights=None,
                                           category_ids=[c["id"] for c in cats], aux_logits=False)
    # untrained, but it calls most regions "bowl" or "orange" (ids 51 and 55, 3 and 4 boxes in this image), so
    # some detections are right and AP is not 0: metrics with something to get wrong
    labels = [1 + [c["id"] for c in cats].index(i) for i in (51, 55)]
    with torch.no_grad():
        model.model.fc.weight.mul_(0.01)
        model.model.fc.bias.zero_()
        model.model.fc.bias[labels] = 5.0
    model.save(tmp_path / "rc.pt")
    rc = main(["eval", "--annotations", str(gt), "--images", str(coco128["images"]), "--weights",
               str(tmp_path / "rc.pt"), "--fast", "--device", "cpu", "--proposals", "ss", "--out", str(tmp_path / "ev")])
    assert rc == 0 and "coco evaluation of" in capsys.readouterr().out
    dets = json.loads((tmp_path / "ev" / "detections.json").read_text())
    assert dets and {d["image_id"] for d in dets} == {image["id"]}
    assert {d["category_id"] for d in dets} <= {c["id"] for c in cats}
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["detections"] == len(dets) and 0.0 <= summary["metrics"]["AP"] <= 1.0
    # the metrics are those of the written detections: evaluating detections.json again ...
    assert main(["eval", "--annotations", str(gt), "--results", str(tmp_path / "ev" / "detections.json"),
                 "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["metrics"] == summary["metrics"] and again["detections"] == len(dets)
    # ... and pycocotools on them directly
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO(str(gt))
    ev = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "ev" / "detections.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert summary["metrics"]["AP"] == pytest.approx(float(ev.stats[0]), abs=1e-9)
    assert summary["metrics"]["AP50"] == pytest.approx(float(ev.stats[1]), abs=1e-9)
    assert summary["metrics"]["AP50"] > 0.0, summary["metrics"]
