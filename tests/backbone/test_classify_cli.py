"""`backbone classify` on a real photo with a self-made checkpoint, and its one-line errors (exit 2)."""

from __future__ import annotations

import json
import logging
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from backbone.checkpoint import model_from_checkpoint, save_checkpoint
from backbone.cli import main as backbone_main
from backbone.weights import googlenet
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
    capsys.readouterr()  # drop what the fixtures logged (an earlier CLI run leaves logging at INFO on stderr)
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
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and out == "" and len(errors) == 1
    assert errors[0].startswith(f"backbone: error: {path}:")


def test_folder_with_bad_files_is_classified_streamed_and_the_bad_ones_named(capsys, tmp_path, photo, ckpt):
    """A bad image among good ones is one stderr line and skipped: the good ones' blocks equal those of a
    clean run, the exit code is 1; ``--strict`` stops at the bad file (exit 2)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = [folder / f"{i}.png" for i in range(3)]
    for i, path in enumerate(good):
        cv2.imwrite(str(path), skimage.data.astronaut()[::1 + i, ::1 + i, ::-1])
    (folder / "1b_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    code, clean, err = _run(capsys, *good, "--weights", ckpt)
    assert code == 0, err
    code, out, err = _run(capsys, folder, "--weights", ckpt)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and out == clean
    assert len(errors) == 1 and errors[0].startswith(f"backbone: error: {folder / '1b_bad.jpg'}:")
    assert "3 of 4 images; 1 skipped" in err
    code, out, err = _run(capsys, folder, "--weights", ckpt, "--strict")  # 0.png, 1.png, then 1b_bad.jpg
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and out == "" and len(errors) == 1 and "1b_bad.jpg" in errors[0], err


def test_results_are_printed_batch_by_batch(tmp_path, photo, ckpt, monkeypatch):
    """Each batch's blocks are written before the next batch is read (memory stays flat)."""
    import io

    import backbone.commands.classify as classify
    import backbone.images

    monkeypatch.setattr(classify, "BATCH", 2)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    blocks_written_at_read = []
    real_read = backbone.images.read_image

    def read(path, **kwargs):
        blocks_written_at_read.append(out.getvalue().count(str(photo)))
        return real_read(path, **kwargs)

    monkeypatch.setattr(backbone.images, "read_image", read)
    assert backbone_main(["classify", str(photo), str(photo), str(photo), "--weights", str(ckpt)]) == 0
    assert blocks_written_at_read == [0, 0, 2] and out.getvalue().count(str(photo)) == 3


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
    assert code == 2 and "--top-k" in err
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


def test_classify_a_url_from_a_local_server(capsys, tmp_path, photo, ckpt):
    """An http URL is downloaded and classified like the file it serves; a missing one is one line (exit 1)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(photo.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        code, from_file, err = _run(capsys, photo, "--weights", ckpt, "--json")
        assert code == 0, err
        code, out, err = _run(capsys, f"{base}/{photo.name}", f"{base}/missing.png", "--weights", ckpt, "--json")
    finally:
        httpd.shutdown()
        httpd.server_close()
    (result,) = json.loads(out)
    assert code == 1 and result["image"] == f"{base}/{photo.name}"
    assert result["top"] == json.loads(from_file)[0]["top"]
    assert f"backbone: error: {base}/missing.png:" in err
