"""The shipped ImageNet -> DET-200 map: equal to a rebuild from WordNet, sane, and used correctly."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torchvision

from backbone.errors import InputError
from backbone.weights import googlenet
from detect.classifier import ZeroShotClassifier
from detect.zeroshot import ZEROSHOT_MAP, load_zeroshot_map

REPO = Path(__file__).resolve().parents[2]
WORDNET = Path("/usr/share/wordnet/data.noun")


def _row(zmap, imagenet_index: int) -> str:
    d = int(zmap.det_label[imagenet_index])
    return "background" if d == 0 else zmap.class_names[d - 1]


@pytest.fixture()
def wordnet() -> Path:
    """Debian's WordNet 3.0 noun file. Absent: skip, but fail where data is required (REQUIRE_SHARED_DATA=1,
    as ``.ci/run`` sets and which installs it, or CI=true), like ``tests/conftest.py``'s shared data."""
    if not WORDNET.exists():
        msg = f"WordNet 3.0 not installed at {WORDNET} (apt-get install wordnet-base)"
        if os.environ.get("REQUIRE_SHARED_DATA") == "1" or os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return WORDNET


def test_shipped_map_equals_rebuild(synsets, wordnet, tmp_path):
    out = tmp_path / "map.tsv"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "make_zeroshot_map.py"),
                          "--imagenet", str(synsets["imagenet1k"]), "--det", str(synsets["det200"]),
                          "--wordnet", str(wordnet), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "483 of 1000 ImageNet classes mapped onto 200 of 200 DET classes" in run.stdout
    assert out.read_text() == ZEROSHOT_MAP.read_text()


def test_map_sanity_facts():
    zmap = load_zeroshot_map()
    assert zmap.det_label.shape == (1000,) and len(zmap.class_names) == 200
    assert zmap.num_mapped == 483
    assert set(zmap.det_label[zmap.det_label > 0].tolist()) == set(range(1, 201))  # every DET class reachable
    assert _row(zmap, 1) == "goldfish"          # the class itself is a DET class
    assert _row(zmap, 281) == "domestic cat"    # tabby -> domestic cat (closest ancestor)
    assert _row(zmap, 151) == "dog"             # Chihuahua -> dog
    assert _row(zmap, 404) == "airplane"        # airliner -> airplane
    assert _row(zmap, 0) == "background"        # tench: no DET ancestor
    assert _row(zmap, 7) == "bird"              # cock -> bird


def test_aggregate_and_zero_shot_probs():
    zmap = load_zeroshot_map()
    p = torch.softmax(torch.randn(5, 1000), dim=1)
    agg = zmap.aggregate(p)
    assert agg.shape == (5, 201) and torch.allclose(agg.sum(1), torch.ones(5))
    assert torch.allclose(agg[:, 0], p[:, zmap.det_label == 0].sum(1))
    dog = zmap.class_names.index("dog") + 1
    assert torch.allclose(agg[:, dog], p[:, zmap.det_label == dog].sum(1))
    model = googlenet(variant="torchvision", num_classes=1000, aux_logits=False).eval()
    zs = ZeroShotClassifier(model, zmap)
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    probs = zs.classify(image, torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 5.0, 60.0, 40.0]]))
    assert probs.shape == (2, 201) and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)


def test_offline_without_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(InputError) as err:
        ZeroShotClassifier.from_imagenet()
    assert "googlenet-1378be20.pth" in str(err.value) and "\n" not in str(err.value)


def test_bad_map_file(tmp_path):
    bad = tmp_path / "map.tsv"
    bad.write_text("imagenet_index\timagenet_wnid\tdet_index\tdet_wnid\tsteps\n0\tn01440764\t5\tn00000000\t1\n")
    with pytest.raises(InputError, match="does not match"):
        load_zeroshot_map(bad)


# -- the zero-shot model equals torchvision's GoogLeNet with the same weights ------------------------------

#: where the 224 px region lies in the 512 x 512 astronaut photo (x0, y0): her face and the flag
CROP_AT = [(150, 20), (280, 200)]
#: absolute tolerance on softmax probabilities (see test_zero_shot_equals_torchvision_googlenet)
TOL = 5e-5


def _calibrated_torchvision_state(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """A seeded random state dict in the layout of torchvision's ImageNet file, with sensible scales:
    BatchNorm running statistics measured on ``images`` (so activations neither vanish nor explode),
    random BatchNorm affines, and a classifier scaled so the 1000 logits spread by a few units (so the
    softmax depends on the input and a wrong input normalisation shows)."""
    torch.manual_seed(1234)
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration pass
            torch.nn.init.uniform_(m.weight, 0.7, 1.3)
            torch.nn.init.uniform_(m.bias, -0.1, 0.1)
    tv.train()
    with torch.no_grad():
        tv(images)
        tv.eval()
        logits = tv(images)
        tv.fc.weight.mul_(3.0 / float(logits.std(dim=1).mean()))
        tv.fc.bias.zero_()
    return tv.state_dict()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skimage.data.astronaut()  # 512 x 512 RGB uint8; scikit-image is a dependency of the project


def _torchvision_input(photo: np.ndarray) -> torch.Tensor:
    """torchvision's own ImageNet preprocessing of the 224 px regions: ToTensor + Normalize with the mean
    and std of GoogLeNet_Weights.IMAGENET1K_V1 (its preset would also resize to 256 and centre-crop)."""
    preset = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.transforms()
    tf = torchvision.transforms.Compose([torchvision.transforms.ToTensor(),
                                         torchvision.transforms.Normalize(preset.mean, preset.std)])
    return torch.stack([tf(photo[y:y + 224, x:x + 224].copy()) for x, y in CROP_AT])


@pytest.fixture(scope="module")
def imagenet_file(photo, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torch hub folder holding a random ``googlenet-1378be20.pth`` (what the zero-shot model loads)."""
    hub = tmp_path_factory.mktemp("hub")
    (hub / "checkpoints").mkdir()
    calib = torch.stack([torchvision.transforms.functional.normalize(
        torch.from_numpy(photo[y:y + 224, x:x + 224].copy()).permute(2, 0, 1).float() / 255,
        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) for x, y in [(0, 0), (288, 0), (0, 288), (288, 288), (144, 144)]])
    state = _calibrated_torchvision_state(calib)
    torch.save(state, hub / "checkpoints" / "googlenet-1378be20.pth")
    return hub, state


def _reference_probs(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    tv.load_state_dict(state)
    with torch.no_grad():
        return torch.softmax(tv.eval()(x), dim=1)


def _reference_det200(p1000: torch.Tensor) -> torch.Tensor:
    """The map read straight from the shipped TSV (not through ZeroShotMap): column d sums the ImageNet
    classes whose det_index is d, column 0 the unmapped ones."""
    from detect.zeroshot import ZEROSHOT_MAP

    with open(ZEROSHOT_MAP, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = torch.zeros(p1000.shape[0], 201, dtype=torch.float64)
    for r in rows:
        out[:, int(r["det_index"])] += p1000[:, int(r["imagenet_index"])].double()
    return out.float()


def _boxes() -> torch.Tensor:
    """Boxes whose context-padded warp (16 px at 224: each side x 224/192) is exactly the 224 px region."""
    return torch.tensor([[x + 16.0, y + 16.0, x + 208.0, y + 208.0] for x, y in CROP_AT])


@pytest.mark.parametrize("through", ["ZeroShotClassifier.from_imagenet", "load_detector"])
def test_zero_shot_equals_torchvision_googlenet(imagenet_file, photo, monkeypatch, through):
    """The zero-shot model as ``detect run`` builds it without --weights (torch hub's file, our GoogLeNet,
    our crop and normalisation; ``load_detector`` also folds BatchNorm) against torchvision's googlenet with
    the same state dict on torchvision's transforms of the same 224 px regions.

    Tolerance: float32 sums in another order, the sub-pixel crop and (through load_detector) BatchNorm folded
    into the convolutions move the probabilities by up to 6e-6 (measured); 5e-5 absolute leaves room for
    other CPUs and is far below what transform_input=False does (0.96 here)."""
    from detect.classifier import ZeroShotClassifier
    from detect.pipeline import DetectorConfig, load_detector

    hub, state = imagenet_file
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")  # the file must come from the hub folder, nothing else
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    if through == "load_detector":
        detector = load_detector(None, DetectorConfig(), device="cpu")
        ensemble = detector.classifier
        (zs,) = ensemble.members
    else:
        from detect.classifier import Ensemble

        zs = ZeroShotClassifier.from_imagenet()
        ensemble = Ensemble([zs])
    assert zs.crop.size == 224
    logits = []
    hook = zs.model.register_forward_hook(lambda _m, _a, out: logits.append(out.detach().clone()))
    det200 = ensemble.classify(torch.from_numpy(photo).permute(2, 0, 1), _boxes())
    hook.remove()
    ours = torch.softmax(torch.cat(logits).float(), dim=1)

    ref = _reference_probs(state, _torchvision_input(photo))
    assert ours.shape == ref.shape == (2, 1000)
    assert float((ours - ref).abs().max()) < TOL
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    assert float(ref.max()) > 0.02 and ref.argmax(1)[0] != ref.argmax(1)[1]  # not a flat, input-blind softmax
    # then the WordNet map, against the TSV read directly
    assert det200.shape == (2, 201)
    assert float((det200 - _reference_det200(ref)).abs().max()) < TOL


def test_the_comparison_sees_transform_input(imagenet_file, photo):
    """Guard for the test above: torchvision's model without transform_input is not within its tolerance,
    so a zero-shot model built with transform_input=False cannot pass it."""
    _, state = imagenet_file
    x = _torchvision_input(photo)
    right = _reference_probs(state, x)
    tv = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    tv.load_state_dict(state)
    with torch.no_grad():
        wrong = torch.softmax(tv.eval()(x), dim=1)
    assert float((wrong - right).abs().max()) > 100 * TOL
