"""Out-of-range options and impossible devices: one line naming the option, exit code 2, no traceback,
nothing loaded or written. (Regression: `detect run` let DetectorConfig/PostprocessConfig ValueErrors and
torch.device RuntimeErrors escape as tracebacks.)"""

from __future__ import annotations

import pytest
import torch

from detect.cli import main as detect_main

from .conftest import assert_refused, run_cli


@pytest.mark.parametrize("option, value, expected", [
    ("--score-threshold", "2", "--show-threshold must be in [0, 1]"),  # the old name of --show-threshold
    ("--keep-threshold", "2", "--keep-threshold must be in [0, 1]"),
    ("--nms-iou", "nan", "--nms-iou must be in [0, 1]"),
    ("--nms-iou", "-0.1", "--nms-iou must be in [0, 1]"),
    ("--max-detections", "0", "--max-detections must be >= 1"),
    ("--batch-size", "0", "--batch-size must be >= 1"),
    ("--superpixel-scale", "-1", "--superpixel-scale must be a positive number"),
    ("--superpixel-scale", "inf", "--superpixel-scale must be a positive number"),
    ("--max-pixels", "0", "--max-pixels must be >= 1"),
    ("--device", "tpu", "is not a device"),
    ("--device", "cuda:7" if torch.cuda.is_available() else "cuda", "CUDA device"),
])
def test_detect_run_refuses_bad_options(corpus, tiny_checkpoint, tmp_path, option, value, expected):
    out = tmp_path / "dets.json"
    outcome = run_cli(detect_main, ["run", str(corpus["grayscale_png"].path), "--weights", str(tiny_checkpoint),
                                    "--fast", "--workers", "0", "--out", str(out), option, value])
    line = assert_refused(outcome, "detect", outputs=[out])
    assert expected in line, line


def test_detect_eval_weights_refuses_a_missing_device(corpus, tiny_checkpoint, tmp_path):
    outcome = run_cli(detect_main, ["eval", "--annotations", str(corpus["coco_valid"].path), "--weights",
                                    str(tiny_checkpoint), "--fast", "--device", "tpu", "--out", str(tmp_path / "ev")])
    assert "is not a device" in assert_refused(outcome, "detect", outputs=[tmp_path / "ev" / "summary.json"])


def test_training_and_eval_commands_refuse_an_unknown_device(corpus, tmp_path):
    """Regression: the shared engine (backbone/detect/multibox train) and `backbone eval` let torch.device's
    RuntimeError escape as a traceback for --device tpu."""
    from backbone.cli import main as backbone_main

    coco = corpus["coco_valid"].path
    folder = tmp_path / "folder"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for src in ("grayscale_png", "rgba_png"):
            (folder / cls / corpus[src].path.name).write_bytes(corpus[src].path.read_bytes())
    runs = [
        ("backbone", backbone_main, ["train", "--data", str(folder), "--image-size", "32", "--batch-size", "2",
                                     "--device", "tpu", "--out", str(tmp_path / "b")]),
        ("backbone", backbone_main, ["eval", "--data", str(folder), "--weights", str(tmp_path / "nothing.pt"),
                                     "--device", "tpu"]),
        ("detect", detect_main, ["train", "--annotations", str(coco), "--images", str(coco.parent), "--proposals",
                                 "jitter", "--weights", "none", "--crop-size", "32", "--padding", "4",
                                 "--batch-size", "4", "--device", "tpu", "--out", str(tmp_path / "t")]),
        ("detect", detect_main, ["multibox", "train", "--annotations", str(coco), "--images", str(coco.parent),
                                 "--input-size", "64", "--priors", "2", "--batch-size", "1", "--device", "tpu",
                                 "--out", str(tmp_path / "m")]),
    ]
    for prog, main, argv in runs:
        line = assert_refused(run_cli(main, argv), prog)
        assert "tpu" in line and "not a device" in line, line
