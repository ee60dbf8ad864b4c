"""The detector learns: a reduced learnability loop (bench/learnability.py, README "Learning from scratch").

Draws a small shapes-on-photos set (:mod:`detect.synthetic`: disc / triangle / cross, which differ by shape
only; scikit-image's photographs, train and test on different ones), trains a region classifier from random
initialisation with ``detect train`` (the from-scratch recipe, fewer images) and scores it on the test
split with ``detect eval --weights --fast``, all through ``detect.cli.main``. A broken detector — training
crops normalised differently from inference crops, labels shuffled, boxes mapped wrongly — cannot reach
the bar, while the working one clears it with margin (see the module's numbers in the README).
"""

from __future__ import annotations

import json

import pytest

from detect.cli import main
from detect.synthetic import SCRATCH_RECIPE, ShapesConfig, make_shapes, skimage_backgrounds


def _recipe(**overrides: str) -> list[str]:
    """SCRATCH_RECIPE with some flags' values replaced."""
    argv = list(SCRATCH_RECIPE)
    for flag, value in overrides.items():
        flag = "--" + flag.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


@pytest.mark.slow
def test_from_scratch_detector_learns_shapes(tmp_path):
    config = ShapesConfig(train_images=48, test_images=16, seed=3)
    train, test = make_shapes(tmp_path / "data", skimage_backgrounds(), config)
    assert not set(train.photos) & set(test.photos)  # the test split's photographs are never trained on

    run = tmp_path / "run"
    code = main(["train", "--annotations", str(train.annotations), "--images", str(train.images),
                 *_recipe(epochs="3", batch_size="64"), "--workers", "0", "--device", "cpu", "--out", str(run)])
    assert code == 0
    code = main(["eval", "--annotations", str(test.annotations), "--images", str(test.images), "--weights",
                 str(run / "model.pt"), "--proposals", "ss", "--fast", "--device", "cpu", "--out", str(tmp_path / "eval")])
    assert code == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    metrics = summary["metrics"]
    assert summary["detections"] > 0
    assert metrics["AP50"] >= 0.8, metrics
    assert min(summary["per_class_AP"].values()) > 0.3, summary["per_class_AP"]  # every shape is learned
