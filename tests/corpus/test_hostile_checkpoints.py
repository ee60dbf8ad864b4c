"""Hostile checkpoints and proposal caches (issue 13): numbers that would allocate gigabytes (class counts,
crop sizes, sampling, MultiBox head sizes), stride-0 tensors and deflated records that expand when used,
wrong types (crop 32.5, tensor category ids), NaN weights that gave empty results without a word, FIFOs.

Every file is derived here from the session's tiny region classifier (``conftest.tiny_checkpoint``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from backbone.checkpoint import load_checkpoint
from backbone.cli import main as backbone_main
from backbone.errors import InputError
from detect.classifier import RegionClassifier
from detect.cli import main as detect_main

from .conftest import assert_refused, run_cli

REPO = Path(__file__).resolve().parents[2]


def _variant(tiny_checkpoint: Path, folder: Path, name: str, edit) -> Path:
    """The tiny checkpoint changed by ``edit(obj)``, saved as ``folder/<name>.pt``."""
    obj = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    edit(obj)
    path = folder / f"{name}.pt"
    torch.save(obj, path)
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(obj):
        for key in keys[:-1]:
            obj = obj[key]
        obj[keys[-1]] = value
    return edit


def _nan_weight(obj):
    obj["model"]["fc.weight"][0, 0] = float("nan")


def _stride0_weight(obj):
    obj["model"]["fc.weight"] = torch.zeros(1).expand_as(obj["model"]["fc.weight"])


REFUSED = {  # name -> (edit, words in the one line)
    "num_classes_500000": (_set("model_config", "num_classes", 500_000), "num_classes"),
    "num_classes_1e9": (_set("model_config", "num_classes", 10**9), "num_classes"),
    "num_classes_bool": (_set("model_config", "num_classes", True), "num_classes"),
    "num_classes_disagrees": (_set("model_config", "num_classes", 7), "classes"),
    "crop_1500": (_set("crop", "size", 1500), "crop"),
    "crop_32_5": (_set("crop", "size", 32.5), "crop"),
    "sampling_1e6": (_set("crop", "sampling_ratio", 10**6), "sampling_ratio"),
    "padding_text": (_set("crop", "padding", "16"), "padding"),
    "tensor_category_ids": (_set("category_ids", torch.tensor([1, 2])), "category_ids"),
    "bool_category_ids": (_set("category_ids", [True, False]), "category_ids"),
    "preprocessing_resize_1e6": (_set("preprocessing", "resize", 10**6), "resize"),
    "preprocessing_mean_nan": (_set("preprocessing", "mean", [float("nan"), 0.0, 0.0]), "mean"),
    "class_names_numbers": (_set("class_names", [0, 1, 2]), "class_names"),
    "class_names_ansi": (_set("class_names", ["__background__", "thing\x1b[2J", "other\nerror: forged"]),
                         "control characters"),
    "nan_weights": (_nan_weight, "NaN"),
    "stride0_weights": (_stride0_weight, "stride"),
}


@pytest.fixture(scope="module")
def variants(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile_ckpt")
    return {name: _variant(tiny_checkpoint, folder, name, edit) for name, (edit, _) in REFUSED.items()}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_region_classifier_checkpoint_refused_with_one_line(variants, name):
    path = variants[name]
    with pytest.raises(InputError) as err:
        RegionClassifier.load(path)
    line = str(err.value)
    assert "\n" not in line and path.name in line and REFUSED[name][1] in line, line


@pytest.mark.parametrize("name", ["num_classes_1e9", "crop_32_5", "nan_weights", "stride0_weights"])
def test_cli_refuses_hostile_checkpoints(variants, corpus, tmp_path, name):
    image = corpus["grayscale_png"].path
    out = tmp_path / "d.json"
    outcome = run_cli(detect_main, ["run", str(image), "--weights", str(variants[name]), "--fast", "--device", "cpu",
                                    "--out", str(out)])
    assert_refused(outcome, "detect", names=variants[name], outputs=[out])
    if name in ("num_classes_1e9", "nan_weights", "stride0_weights"):
        outcome = run_cli(backbone_main, ["classify", str(image), "--weights", str(variants[name])])
        assert_refused(outcome, "backbone", names=variants[name])


def test_deflated_record_refused_unread(tiny_checkpoint, tmp_path):
    """torch writes records uncompressed; a zip whose records inflate far past its size is refused before
    torch.load would inflate them (a 1 GB zero record deflated to 1 MB cost +0.9 GB)."""
    obj = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    obj["config"]["padding"] = torch.zeros(64 << 20, dtype=torch.uint8)  # 64 MB of zeros
    plain = tmp_path / "plain.pt"
    torch.save(obj, plain)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert deflated.stat().st_size < plain.stat().st_size // 2
    with pytest.raises(InputError, match="inflate"):
        load_checkpoint(deflated)
    assert load_checkpoint(plain)["config"]["padding"].numel() == 64 << 20  # the same content, stored: accepted


def test_fifo_and_device_as_weights(tmp_path):
    fifo = tmp_path / "w.pt"
    os.mkfifo(fifo)
    for path, words in ((fifo, "pipe"), (Path("/dev/zero"), "device")):
        with pytest.raises(InputError, match=words):
            load_checkpoint(path)


def test_multibox_checkpoint_numbers_checked_before_building(tmp_path):
    from proposals.multibox import MultiBoxConfig, build_multibox, load_multibox, save_multibox

    priors = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.2, 0.9, 0.8]])
    path = tmp_path / "mb.pt"
    save_multibox(path, build_multibox(priors, MultiBoxConfig(input_size=64, num_priors=2)))
    assert load_multibox(path).num_priors == 2
    obj = torch.load(path, map_location="cpu", weights_only=True)
    cases = {"head_grid": ("multibox", "head_grid", 1000), "input_size": ("multibox", "input_size", 10**6),
             "top_k": ("multibox", "top_k", 2.5), "priors": ("priors", None, torch.zeros(10**5, 4)),
             "priors_shape": ("priors", None, torch.zeros(2, 3))}
    for name, (key, sub, value) in cases.items():
        bad = {**obj, "multibox": dict(obj["multibox"])}
        if sub is None:
            bad[key] = value
        else:
            bad[key][sub] = value
        bad_path = tmp_path / f"{name}.pt"
        torch.save(bad, bad_path)
        with pytest.raises(InputError) as err:
            load_multibox(bad_path)
        assert bad_path.name in str(err.value) and name.split("_")[0] in str(err.value), (name, str(err.value))


def _stride0_cache(folder: Path) -> Path:
    """A proposal-cache folder whose one entry (2 KB) holds stride-0 boxes of 10^9 rows."""
    folder.mkdir()
    (folder / "cache.json").write_text('{"config_hash": "abc", "settings": {}}')
    torch.save({"boxes": torch.zeros(1).expand(10**9, 4), "scores": torch.zeros(1).expand(10**9),
                "sources": torch.zeros(1, dtype=torch.int64).expand(10**9), "config_hash": "abc", "image_id": "a"},
               folder / "a.pt")
    assert (folder / "a.pt").stat().st_size < 10_000
    return folder


def test_stride0_cache_entry_is_stale_not_expanded(tmp_path):
    from proposals.cache import load_cached

    folder = _stride0_cache(tmp_path / "cache")
    with pytest.raises(InputError, match="corrupt or stale"):
        load_cached(folder, "a")
    os.mkfifo(folder / "b.pt")
    with pytest.raises(InputError, match="corrupt or stale"):
        load_cached(folder, "b")


_PEAKS = r"""
import resource, sys
from backbone.errors import InputError
from detect.classifier import RegionClassifier
from proposals.cache import load_cached
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:-1]:
    try:
        RegionClassifier.load(path)
        print("STEP accepted", path, flush=True)
    except InputError:
        print("STEP refused", path, flush=True)
try:
    load_cached(sys.argv[-1], "a")
    print("STEP accepted cache", flush=True)
except InputError:
    print("STEP refused cache", flush=True)
print("GROWN", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_checkpoint_bombs_peak_memory(variants, tmp_path):
    """num_classes 500,000 (6.9 GB before), crop 1500 (7.5 GB at use), a stride-0 proposal-cache entry
    (9.9 GB before): refused with RSS growing < 150 MB, the child under 2 GB."""
    cache = _stride0_cache(tmp_path / "cache")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [str(variants[n]) for n in ("num_classes_500000", "crop_1500", "stride0_weights")]
    proc = subprocess.run([sys.executable, "-c", _PEAKS, *args, str(cache)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    steps = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("STEP")]
    assert steps == ["refused"] * 4, proc.stdout + proc.stderr
    assert float(proc.stdout.split("GROWN")[1].split()[0]) < 150, proc.stdout
    assert float(proc.stdout.split("PEAK")[1]) < 2048, proc.stdout
