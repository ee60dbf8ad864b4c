"""`detect multibox train` killed with SIGKILL mid-epoch, then ``--resume`` (see test_kill_resume.py)."""

from __future__ import annotations

import pytest

from detect.cli import main as detect_main

from ._tiny_data import coco_set
from .test_kill_resume import _kill_resume_compare

pytestmark = pytest.mark.slow



def test_multibox_train_killed_and_resumed(tmp_path):
    ann, images = coco_set(tmp_path / "coco")
    argv = ["multibox", "train", "--annotations", str(ann), "--images", str(images), "--input-size", "64",
            "--priors", "8", "--batch-size", "1", "--epochs", "2", "--checkpoint-every", "1", "--workers", "0",
            "--device", "cpu", "--variant", "paper", "--polyak", "0.5", "--seed", "7"]
    _kill_resume_compare(tmp_path, "detect.cli", detect_main, argv, delay=0.3)
