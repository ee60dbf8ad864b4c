"""Weights, checkpoints, preprocessing and ImageNet class names. Never touches the network."""

from __future__ import annotations

import csv
import pickle
import urllib.error

import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from torchvision.transforms._presets import ImageClassification

from backbone.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint, save_checkpoint
from backbone.errors import InputError
from backbone.weights import googlenet
from backbone.preprocess import Preprocessing, preprocess, resize
from backbone.weights import IMAGENET_FILE, imagenet_classes, imagenet_wnids, imagenet_weights_path, load_classifier




@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp, downloads off: the checkpoints folder torch hub would use."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def tv_state():
    """torchvision's random-init GoogLeNet state dict: stands in for the ImageNet file (never downloaded)."""
    torch.manual_seed(3)
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


# ---- ImageNet weights through torch hub's cache ------------------------------------------------------

def test_offline_imagenet_message_names_file_and_folder(hub):
    with pytest.raises(InputError) as err:
        googlenet(variant="torchvision", weights="imagenet")
    text = _one_line(err)
    assert IMAGENET_FILE in text and str(hub) in text and "GOINGDEEPER_OFFLINE" in text


def test_failed_download_is_one_line(hub, monkeypatch):
    monkeypatch.delenv("GOINGDEEPER_OFFLINE")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(InputError) as err:
        imagenet_weights_path()
    text = _one_line(err)
    assert "download failed" in text and "name resolution" in text and str(hub) in text


def test_imagenet_weights_only_for_torchvision_variant(hub):
    with pytest.raises(InputError, match="only for the torchvision variant"):
        googlenet(variant="paper", weights="imagenet")


def test_imagenet_weights_load_from_hub_cache(hub, tv_state):
    tv, state = tv_state
    hub.mkdir(parents=True)
    torch.save(state, hub / IMAGENET_FILE)
    model = googlenet(weights="imagenet", aux_logits=False)  # variant taken from the weights
    assert model.variant == "torchvision" and model.config.transform_input
    tv.transform_input = True  # torchvision's builder sets it for these weights
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert (model.eval()(x) - tv.eval()(x)).abs().max().item() <= 1e-5

    # Another class count: trunk kept, classifier reset.
    small = googlenet(weights="imagenet", num_classes=10)
    assert small.fc.out_features == 10 and small.aux1.fc2.out_features == 10
    torch.testing.assert_close(small.inception5b.branch1.conv.weight, state["inception5b.branch1.conv.weight"])
    torch.testing.assert_close(small.aux1.fc1.weight, state["aux1.fc1.weight"])


def test_raw_state_dict_path_and_variant_check(tmp_path, tv_state):
    _, state = tv_state
    path = tmp_path / "raw.pth"
    torch.save(state, path)
    assert googlenet(weights=path, aux_logits=False).variant == "torchvision"
    with pytest.raises(InputError) as err:
        googlenet(weights=path, variant="paper")
    assert "'torchvision' GoogLeNet layout" in _one_line(err)
    paper_state = googlenet(variant="paper", num_classes=4).state_dict()
    torch.save(paper_state, path)
    assert googlenet(weights=path).num_classes == 4  # paper layout recognised, class count from the file


# ---- checkpoints -------------------------------------------------------------------------------------

@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(4)
    model = googlenet(variant="paper", num_classes=3)
    path = tmp_path / "ckpt.pt"
    pre = Preprocessing(resize=80, crop=64)
    save_checkpoint(path, model, class_names=["cat", "dog", "bird"], preprocessing=pre,
                    config={"lr": 0.01, "epochs": 2}, extra={"epoch": 2, "top1": 0.5})
    return model, path, pre


def test_checkpoint_round_trip_gives_same_logits(checkpoint):
    model, path, pre = checkpoint
    raw = torch.load(path, weights_only=True)  # plain tensors and types only
    assert raw["format"] == FORMAT and raw["arch"] == "googlenet" and raw["variant"] == "paper"
    assert raw["num_classes"] == 3 and raw["class_names"] == ["cat", "dog", "bird"]
    assert raw["config"] == {"lr": 0.01, "epochs": 2} and raw["epoch"] == 2 and raw["top1"] == 0.5
    assert Preprocessing.from_dict(raw["preprocessing"]) == pre
    rebuilt, ckpt = model_from_checkpoint(path, expect_variant="paper", expect_num_classes=3)
    assert ckpt["class_names"] == raw["class_names"] and not rebuilt.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model.eval()(x), rtol=0, atol=0)
    same = googlenet(weights=path)
    torch.testing.assert_close(same.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    classifier, names, pre2 = load_classifier(path)
    assert names == ["cat", "dog", "bird"] and pre2 == pre and classifier.aux1 is None


def test_checkpoint_mismatches_are_one_line(checkpoint):
    _, path, _ = checkpoint
    for call, expected in [
        (lambda: model_from_checkpoint(path, expect_variant="torchvision"), "'paper' GoogLeNet variant"),
        (lambda: model_from_checkpoint(path, expect_num_classes=1000), "3 classes, expected 1000"),
        (lambda: googlenet(weights=path, variant="torchvision"), "'paper' GoogLeNet variant"),
        (lambda: googlenet(weights=path, num_classes=5), "3 classes, not 5"),
    ]:
        with pytest.raises(InputError) as err:
            call()
        assert expected in _one_line(err) and str(path) in str(err.value)


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.mark.parametrize("kind, expected", [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("truncated", "truncated or corrupt"),
    ("garbage", "truncated or corrupt"),
    ("code", "refused: not a plain-tensor checkpoint"),
    ("state_dict", "not a goingdeeper checkpoint"),
    ("other_format", "format 'other/2' not supported"),
])
def test_bad_checkpoints_are_refused_with_one_line(tmp_path, checkpoint, kind, expected):
    _, good, _ = checkpoint
    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 10)
    elif kind == "code":
        torch.save({"format": FORMAT, "model": _Payload()}, path)
    elif kind == "state_dict":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    elif kind == "other_format":
        torch.save({"format": "other/2"}, path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert expected in _one_line(err) and str(path) in str(err.value)


def test_code_carrying_pickle_is_refused_before_it_runs(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": FORMAT, "x": _Payload()}, f, protocol=2)  # a legacy (non-zip) torch file
    with pytest.raises(InputError, match="refused"):
        googlenet(weights=path)
    assert "this would run on load" not in capsys.readouterr().out


def test_save_refuses_wrong_class_names_and_reserved_extra(tmp_path):
    model = googlenet(variant="paper", num_classes=2, aux_logits=False)
    with pytest.raises(ValueError, match="class names"):
        save_checkpoint(tmp_path / "a.pt", model, class_names=["x"], preprocessing=Preprocessing(), config={})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.pt", model, class_names=["x", "y"], preprocessing=Preprocessing(),
                        config={}, extra={"model": {}})
    with pytest.raises(ValueError, match=r"config.data\[0\] is a PosixPath"):  # would not load later
        save_checkpoint(tmp_path / "a.pt", model, class_names=["x", "y"], preprocessing=Preprocessing(),
                        config={"data": [tmp_path]})
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---- preprocessing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(512, 512), (300, 200), (180, 400)])
def test_preprocess_matches_torchvision_preset(shape):
    image = skimage.data.astronaut()[: shape[0], : shape[1]].copy()
    ours = preprocess(image)
    assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
    theirs = ImageClassification(crop_size=224)(torch.from_numpy(image).permute(2, 0, 1))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_preprocessing_round_trip_and_normalisation():
    pre = Preprocessing(resize=40, crop=32, interpolation="area")
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    grey = np.full((50, 60, 3), 128, np.uint8)
    out = pre(grey)
    assert out.shape == (3, 32, 32)
    expected = (128 / 255 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError):
        Preprocessing(crop=300, resize=256)
    with pytest.raises(ValueError):
        preprocess(np.zeros((4, 4), np.uint8))


def test_resize_shorter_side_and_area():
    x = torch.arange(3 * 4 * 6, dtype=torch.uint8).reshape(3, 4, 6)
    assert resize(x, 2, "bilinear").shape == (3, 2, 3)  # shorter side 4 -> 2, longer 6 -> 3
    area = resize(x, (2, 3), "area")
    expected = x.float().reshape(3, 2, 2, 3, 2).mean(dim=(2, 4)).round().to(torch.uint8)
    torch.testing.assert_close(area, expected, rtol=0, atol=0)


# ---- class names -------------------------------------------------------------------------------------

def test_imagenet_classes_are_short_unique_and_in_order():
    names, wnids = imagenet_classes(), imagenet_wnids()
    assert len(names) == len(set(names)) == 1000 and len(set(wnids)) == 1000
    assert names[0] == "tench" and wnids[0] == "n01440764" and names[999] == "toilet tissue"
    assert names[134] == "crane (n02012849)" and names[517] == "crane (n03126707)"


def test_shipped_class_file_is_what_the_script_makes(synsets, tmp_path):
    from importlib import import_module
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        script = import_module("make_imagenet_classes")
    finally:
        sys.path.pop(0)
    out = tmp_path / "classes.tsv"
    assert script.main([str(synsets["imagenet1k"]), str(out)]) == 0
    shipped = Path(__file__).resolve().parents[2] / "backbone" / "data" / "imagenet_classes.tsv"
    assert out.read_text() == shipped.read_text()
    with synsets["imagenet1k"].open() as f:
        assert [r["wnid"] for r in csv.DictReader(f, delimiter="\t")] == imagenet_wnids()
