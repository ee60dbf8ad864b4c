"""`backbone classify` on a real photo with a self-made checkpoint, and its one-line errors (exit 2)."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from backbone.checkpoint import model_from_checkpoint, save_checkpoint
from backbone.cli import main as backbone_main
from backbone.googlenet import googlenet
from backbone.images import read_image
from backbone.preprocess import Preprocessing

CLASSES = ["astronaut", "flag", "rocket"]




@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI's logging set-up binds a handler to this test's captured stderr; drop it afterwards so
    that later tests do not log into a closed capture stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), skimage.data.astronaut()[:, :, ::-1])
    return path


@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(5)
    model = googlenet(variant="paper", num_classes=3, aux_logits=False)
    path = tmp_path / "three.pt"
    # A small crop keeps the test cheap; the checkpoint carries its own preprocessing.
    save_checkpoint(path, model, class_names=CLASSES, preprocessing=Preprocessing(resize=72, crop=64),
                    config={"note": "test"})
    return path


def _run(capsys, *argv):
    code = backbone_main(["classify", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_classify_json_matches_the_library(capsys, photo, ckpt):
    code, out, err = _run(capsys, photo, "--weights", ckpt, "--topk", "2", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["image"] == str(photo) and [t["rank"] for t in result["top"]] == [1, 2]
    probs = [t["probability"] for t in result["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    model, ck = model_from_checkpoint(ckpt)
    pre = Preprocessing.from_dict(ck["preprocessing"])
    with torch.no_grad():
        expected = torch.softmax(model(pre(read_image(photo)).unsqueeze(0)), 1)[0]
    for t in result["top"]:
        assert t["class"] == CLASSES[t["index"]]
        assert t["probability"] == pytest.approx(float(expected[t["index"]]), abs=1e-6)


def test_classify_table_and_odd_image_kinds(capsys, tmp_path, photo, ckpt):
    rgb = skimage.data.astronaut()[::4, ::4]
    grey, rgba, deep = tmp_path / "grey.png", tmp_path / "rgba.png", tmp_path / "deep.png"
    cv2.imwrite(str(grey), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(rgba), np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(deep), rgb[:, :, ::-1].astype(np.uint16) * 257)
    code, out, err = _run(capsys, photo, grey, rgba, deep, "--weights", ckpt, "--topk", "10")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(photo) and len(lines) == 4 * (1 + 3)  # top-k capped at the 3 classes
    assert all(line.strip().endswith(tuple(CLASSES)) and "%" in line for line in lines[1:4])


def test_default_imagenet_weights_offline_is_one_line(capsys, tmp_path, photo):
    code, out, err = _run(capsys, photo)
    assert code == 2 and out == "" and "\n" not in err
    assert "googlenet-1378be20.pth" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err


@pytest.mark.parametrize("kind", ["missing", "corrupt", "text", "folder"])
def test_bad_images_exit_2_with_one_line(capsys, tmp_path, ckpt, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    elif kind == "text":
        path.write_text("hello")
    elif kind == "folder":
        path.mkdir()
    code, out, err = _run(capsys, path, "--weights", ckpt)
    assert code == 2 and out == "" and "\n" not in err
    assert err.startswith(f"backbone: error: {path}:")


@pytest.mark.parametrize("kind", ["truncated", "variant", "not_torch"])
def test_bad_checkpoints_exit_2_with_one_line(capsys, tmp_path, photo, ckpt, kind):
    path = tmp_path / f"{kind}.pt"
    args = ["--weights", path]
    if kind == "truncated":
        path.write_bytes(ckpt.read_bytes()[:4096])
    elif kind == "variant":
        path = ckpt
        args = ["--weights", path, "--variant", "torchvision"]
    else:
        path.write_text("definitely not weights")
    code, out, err = _run(capsys, photo, *args)
    assert code == 2 and out == "" and "\n" not in err and err.startswith(f"backbone: error: {path}:")


def test_bad_options_exit_2(capsys, photo, ckpt):
    code, _, err = _run(capsys, photo, "--weights", ckpt, "--topk", "0")
    assert code == 2 and "--topk" in err
    if not torch.cuda.is_available():
        code, _, err = _run(capsys, photo, "--weights", ckpt, "--device", "cuda")
        assert code == 2 and "CUDA" in err and "\n" not in err


@pytest.mark.gpu
def test_cuda_gives_the_cpu_probabilities(capsys, photo, ckpt):
    results = {}
    for device in ("cpu", "cuda"):
        code, out, err = _run(capsys, photo, "--weights", ckpt, "--json", "--device", device)
        assert code == 0, err
        results[device] = {t["class"]: t["probability"] for t in json.loads(out)[0]["top"]}
    assert results["cpu"].keys() == results["cuda"].keys()
    for name, p in results["cpu"].items():  # cuDNN convolutions use TF32 by default: ~1e-4 apart on an H100
        assert results["cuda"][name] == pytest.approx(p, abs=1e-3)
