"""`detect eval --weights` under torchrun: 2 gloo processes each detect half the images, rank 0 gathers and
evaluates; the metrics equal a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.classifier import RegionClassifier
from detect.crops import CropConfig
from detect.datasets import read_coco

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_eval_equals_one_process(coco128, tmp_path):
    data = json.loads(coco128["annotations"].read_text())
    images = sorted(data["images"], key=lambda r: r["file_name"])[:3]
    ids = {r["id"] for r in images}
    subset = tmp_path / "three.json"
    subset.write_text(json.dumps({**data, "images": images,
                                  "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}))
    dataset = read_coco(subset, coco128["images"])
    torch.manual_seed(0)
    rc = RegionClassifier.from_backbone(dataset.class_names, variant="paper", weights=None, aux_logits=False,
                                        crop=CropConfig(size=64, padding=4), category_ids=dataset.category_ids)
    ckpt = tmp_path / "rc.pt"
    rc.save(ckpt)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["eval", "--annotations", str(subset), "--images", str(coco128["images"]), "--weights", str(ckpt),
            "--fast", "--device", "cpu"]
    subprocess.run([sys.executable, "-m", "detect", *args, "--out", str(tmp_path / "one")], check=True, env=env,
                   timeout=600, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                    str(29600 + os.getpid() % 1000), "-m", "detect", *args, "--out", str(tmp_path / "two")],
                   check=True, env=env, timeout=600, stdout=subprocess.DEVNULL)
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert one["metrics"] == two["metrics"] and one["images"] == two["images"] == 3
    one_dets = json.loads((tmp_path / "one" / "detections.json").read_text())
    assert one_dets == json.loads((tmp_path / "two" / "detections.json").read_text())
    # not two empty lists: every image (so both ranks' shards) has detections, and the summaries count them
    assert {d["image_id"] for d in one_dets} == ids
    assert one["detections"] == two["detections"] == len(one_dets) > 0
