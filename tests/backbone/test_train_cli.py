"""`backbone train` and `backbone eval` end to end: bad inputs (one line, exit 2) and a real small run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbone.checkpoint import save_checkpoint
from backbone.cli import main as backbone_main
from backbone.weights import googlenet
from backbone.preprocess import Preprocessing


def _run(argv, capsys):
    code = backbone_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("backbone: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _folder(root: Path, classes=("cat", "dog"), per_class=2, size=40) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(per_class):
            (root / c).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / c / f"{i}.png"), (rng.random((size, size + 4, 3)) * 255).astype(np.uint8))
    return root


def _checkpoint(path: Path, class_names, *, crop=32) -> Path:
    torch.manual_seed(0)
    model = googlenet(variant="paper", num_classes=len(class_names), aux_logits=False)
    save_checkpoint(path, model, class_names=list(class_names), preprocessing=Preprocessing(resize=36, crop=crop),
                    config={})
    return path


def test_train_refuses_an_empty_folder_and_a_flat_one(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "empty: empty folder; expected the ImageNet layout" in _one_error_line(err)
    (tmp_path / "flat").mkdir()
    cv2.imwrite(str(tmp_path / "flat" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    code, _, err = _run(["train", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "1 images but no class subfolders" in _one_error_line(err)
    code, _, err = _run(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "nope: no such folder" in _one_error_line(err)


def test_train_stops_at_a_corrupt_image_naming_it(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, _, err = _run(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--image-size", "32",
                         "--batch-size", "5", "--epochs", "1", "--workers", "0"], capsys)
    assert code == 2
    assert "dog/broken.jpg: not a readable image (corrupt or truncated" in _one_error_line(err)
    assert not (tmp_path / "o" / "model.pt").exists()


def test_train_resume_without_a_run_and_too_small_a_set(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    code, _, err = _run(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--resume"], capsys)
    assert code == 2 and "last.pt: no checkpoint to resume from" in _one_error_line(err)
    code, _, err = _run(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--batch-size", "8",
                         "--image-size", "32"], capsys)
    assert code == 2 and "4 samples, fewer than one batch of 8" in _one_error_line(err)


def test_eval_refuses_checkpoints_that_do_not_fit(tmp_path, capsys):
    data = _folder(tmp_path / "data", classes=("cat", "dog"), per_class=1)
    other = _checkpoint(tmp_path / "animals3.pt", ["ant", "bee", "cat"])
    code, _, err = _run(["eval", "--data", str(data), "--weights", str(other), "--workers", "0"], capsys)
    assert code == 2 and "1 class folders (dog) are not among the 3 classes of" in _one_error_line(err)
    two = _checkpoint(tmp_path / "pets.pt", ["cat", "dog"])
    code, _, err = _run(["eval", "--data", str(data), "--weights", str(two), str(other), "--workers", "0"], capsys)
    line = _one_error_line(err)
    assert code == 2 and "animals3.pt: has a different number of classes than" in line and "pets.pt" in line
    raw = tmp_path / "raw.pt"
    torch.save({"epoch": 3}, raw)
    code, _, err = _run(["eval", "--data", str(data), "--weights", str(raw)], capsys)
    assert code == 2 and "raw.pt: neither a goingdeeper checkpoint nor a state dict" in _one_error_line(err)


def _ranked_checkpoint(path: Path, class_names, ranking) -> Path:
    """A checkpoint whose prediction ignores the image: zero classifier weights and biases that rank the
    classes as ``ranking`` (best first), so every crop of every image gets the same known top 5."""
    model = googlenet(variant="paper", num_classes=len(class_names), aux_logits=False)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([float(len(ranking) - ranking.index(c)) for c in class_names]))
    save_checkpoint(path, model, class_names=list(class_names), preprocessing=Preprocessing(resize=36, crop=32),
                    config={})
    return path


def test_eval_prints_a_table_and_writes_json(tmp_path, capsys):
    # 7 classes, so top 5 is a real choice; the checkpoint lists them in another order than the folders sort
    names = ["gnu", "fox", "eel", "dog", "cat", "bee", "ant"]
    ranking = ["cat", "dog", "ant", "fox", "bee", "gnu", "eel"]  # what the model predicts, best first
    data = _folder(tmp_path / "data", classes=tuple(names), per_class=1, size=36)
    _folder(data, classes=("dog", "gnu"), per_class=2, size=36)  # 9 images: dog and gnu have 2
    ckpt = _ranked_checkpoint(tmp_path / "zoo.pt", names, ranking)
    out = tmp_path / "res.json"
    code, stdout, err = _run(["eval", "--data", str(data), "--weights", str(ckpt), str(ckpt), "--crops", "10",
                              "--workers", "0", "--out", str(out)], capsys)
    assert code == 0, err
    assert "ensemble of 2" in stdout and "top-5 err" in stdout
    result = json.loads(out.read_text())
    assert result["images"] == 9 and result["crops"] == 10 and result["models"] == 2
    assert result["top1"] == pytest.approx(1 / 9)  # only the cat image: cat is always first
    assert result["top5"] == pytest.approx(6 / 9)  # cat, dog x2, ant, fox, bee; not gnu x2, eel


@pytest.mark.slow
def test_train_on_coco_crops_then_eval_and_classify(coco_crops, tmp_path, capsys):
    """Real data: the paper variant learns coco128 object crops (5 classes, 125 images) at 32 x 32 on CPU."""
    out = tmp_path / "run"
    code, stdout, err = _run(["train", "--data", str(coco_crops), "--out", str(out), "--image-size", "32",
                              "--epochs", "3", "--batch-size", "25", "--lr", "0.01", "--polyak", "0.5",
                              "--workers", "0", "--checkpoint-every", "1000"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert records[-1]["loss"] < records[0]["loss"]
    assert max(r["acc"] for r in records[1:]) > 0.2  # chance is 1/5 (augmented training crops)

    code, stdout, err = _run(["eval", "--data", str(coco_crops), "--weights", str(out / "model.pt"),
                              "--crops", "1", "--workers", "0", "--out", str(tmp_path / "eval.json")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    # Plumbing only: 15 steps from scratch do not learn these crops (measured top-1 0.216, below the 0.32 of
    # always answering "person"); that training and eval do learn and measure is shown by
    # test_train_then_eval_learns_tinted_photos below.
    assert result["images"] == 125 and result["top5"] == 1.0  # 5 classes

    image = next((coco_crops / "person").iterdir())
    code, stdout, err = _run(["classify", str(image), "--weights", str(out / "model.pt"), "--topk", "1", "--json"],
                             capsys)
    assert code == 0, err
    top = json.loads(stdout)[0]["top"][0]  # class names come from the checkpoint
    assert top["class"] in {d.name for d in coco_crops.iterdir()} and 0 < top["probability"] <= 1


def _tinted_photos(root: Path, per_class: int = 8) -> Path:
    """A task GoogLeNet learns from scratch in a few dozen steps: 48 px patches of a real photo (scikit-image's
    astronaut, grey, low contrast) tinted red, green or blue by class. The tint survives every augmentation
    of section 6 (crops of 8-100 %, flips, brightness/contrast/saturation x0.5-1.5, hue +-0.05)."""
    import skimage.data

    grey = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    rng = np.random.default_rng(0)
    for name, tint in {"red": (1.0, 0.25, 0.25), "green": (0.25, 1.0, 0.25), "blue": (0.25, 0.25, 1.0)}.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            y, x = rng.integers(0, 512 - 48, 2)
            patch = (grey[y:y + 48, x:x + 48, None] * 0.3 + 140) * np.array(tint, np.float32)
            cv2.imwrite(str(root / name / f"{i}.png"), cv2.cvtColor(patch.clip(0, 255).astype(np.uint8),
                                                                    cv2.COLOR_RGB2BGR))
    return root


@pytest.mark.slow
def test_train_then_eval_learns_tinted_photos(tmp_path, capsys):
    """`backbone train` then `backbone eval` on a learnable task: chance (and the majority class) is 1/3,
    the measured top-1 after 24 steps is 1.0 (train accuracy 0.33 -> 0.75 under augmentation); 30-60 s on a
    loaded 2-core machine. A model that does not learn, or labels mixed up between training and
    evaluation, stays near 1/3."""
    data = _tinted_photos(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = _run(["train", "--data", str(data), "--out", str(out), "--variant", "paper", "--image-size", "32",
                         "--epochs", "8", "--batch-size", "8", "--lr", "0.01", "--polyak", "0", "--workers", "0",
                         "--checkpoint-every", "1000"], capsys)
    assert code == 0, err
    code, _, err = _run(["eval", "--data", str(data), "--weights", str(out / "model.pt"), "--crops", "1",
                         "--workers", "0", "--out", str(tmp_path / "eval.json")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["images"] == 24
    assert result["top1"] >= 0.9, result  # chance 1/3


def test_init_weights_from_a_checkpoint_with_other_classes_keep_the_trunk(tmp_path):
    import argparse

    from backbone.commands.train import _initial_model

    ckpt = _checkpoint(tmp_path / "three.pt", ["ant", "bee", "cat"])
    saved = torch.load(ckpt, weights_only=True)["model"]
    args = argparse.Namespace(weights=str(ckpt), variant=None)
    model = _initial_model(args, 5)
    assert model.num_classes == 5 and model.variant == "paper" and model.aux1 is not None
    state = model.state_dict()
    assert torch.equal(state["conv1.conv.weight"], saved["conv1.conv.weight"])
    assert state["fc.weight"].shape == (5, 1024)
    same = _initial_model(argparse.Namespace(weights=str(ckpt), variant=None), 3)
    assert torch.equal(same.state_dict()["fc.weight"], saved["fc.weight"])


def test_train_then_resume_for_more_epochs(tmp_path, capsys):
    data = _folder(tmp_path / "data", size=36)
    common = ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--image-size", "32", "--batch-size", "2",
              "--workers", "0", "--polyak", "0.5"]
    code, stdout, err = _run(common + ["--epochs", "1"], capsys)
    assert code == 0, err
    assert "1 epochs, 2 steps" in stdout
    first = torch.load(tmp_path / "o" / "model.pt", weights_only=True)
    assert first["class_names"] == ["cat", "dog"] and first["preprocessing"]["crop"] == 32
    code, stdout, err = _run(common + ["--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    assert "2 epochs, 4 steps" in stdout
    records = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    second = torch.load(tmp_path / "o" / "model.pt", weights_only=True)
    assert not torch.equal(first["model"]["fc.weight"], second["model"]["fc.weight"])
    _folder(data, classes=("eel",), per_class=1, size=36)
    code, _, err = _run(common + ["--epochs", "3", "--resume"], capsys)
    assert code == 2 and "last.pt: was trained on 2 classes (cat, dog) but --data has 3 class folders (cat, dog, eel)" \
        in _one_error_line(err)
