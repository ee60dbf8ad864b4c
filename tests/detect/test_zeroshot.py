"""The shipped ImageNet -> DET-200 map: equal to a rebuild from WordNet, sane, and used correctly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbone.errors import InputError
from backbone.googlenet import googlenet
from detect.classifier import ZeroShotClassifier
from detect.zeroshot import ZEROSHOT_MAP, load_zeroshot_map

REPO = Path(__file__).resolve().parents[2]
WORDNET = Path("/usr/share/wordnet/data.noun")


def _row(zmap, imagenet_index: int) -> str:
    d = int(zmap.det_label[imagenet_index])
    return "background" if d == 0 else zmap.class_names[d - 1]


@pytest.mark.skipif(not WORDNET.exists(), reason="WordNet 3.0 not installed (apt-get install wordnet-base)")
def test_shipped_map_equals_rebuild(synsets, tmp_path):
    out = tmp_path / "map.tsv"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "make_zeroshot_map.py"),
                          "--imagenet", str(synsets["imagenet1k"]), "--det", str(synsets["det200"]),
                          "--wordnet", str(WORDNET), "--out", str(out)], capture_output=True, text=True)
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
