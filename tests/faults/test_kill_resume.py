"""Training killed with SIGKILL mid-epoch, then ``--resume``: the three training commands end to end.

For ``backbone train``, ``detect train`` and ``detect multibox train`` on tiny data (CPU, one thread,
``--workers 0``, ``--checkpoint-every 1``): a child process is killed right after its first mid-epoch
``last.pt`` appears; that file must load and hold a mid-epoch position (so at most one checkpoint interval
is lost); ``--resume`` must finish the run, and the final ``model.pt`` must equal, tensor for tensor, the one
of an uninterrupted run with the same seed. (The engine itself is tested the same way in
tests/backbone/test_engine.py; these check the commands' wiring: data order, samplers, proposal caches,
MultiBox priors, EMA.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backbone.cli import main as backbone_main
from detect.cli import main as detect_main

from ._kill import kill_when, start_slowed
from ._tiny_data import coco_set, image_folder

pytestmark = pytest.mark.slow



def _mid_epoch_checkpoint(last: Path, _seen: dict = {}) -> bool:  # noqa: B006 - memo of (path, mtime)
    """True once ``last`` holds a position inside the first epoch (read again only when it changed)."""
    if not last.exists():
        return False
    key = (last, last.stat().st_mtime_ns)
    if key not in _seen:
        state = torch.load(last, map_location="cpu", weights_only=True)
        _seen[key] = state["epoch"] == 0 and state["step"] >= 1
    return _seen[key]


def _tensors(obj, prefix=""):
    """Every tensor of a (nested) checkpoint dict, by dotted key."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def _assert_same_model(a: Path, b: Path) -> None:
    ta = dict(_tensors(torch.load(a, map_location="cpu", weights_only=True)))
    tb = dict(_tensors(torch.load(b, map_location="cpu", weights_only=True)))
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ after kill + resume, e.g. {different[:3]}"


def _kill_resume_compare(tmp_path: Path, module: str, main, argv: list[str], delay: float) -> dict:
    """Kill a run in ``tmp_path/killed`` mid-epoch, resume it, compare with ``tmp_path/whole``."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = start_slowed(module, [*argv, "--out", str(killed)], delay=delay)
    kill_when(proc, lambda: _mid_epoch_checkpoint(killed / "last.pt"))
    assert not (killed / "model.pt").exists()
    state = torch.load(killed / "last.pt", map_location="cpu", weights_only=True)  # complete, loadable
    assert state["epoch"] == 0 and state["step"] >= 1
    assert main([*argv, "--out", str(killed), "--resume"]) == 0
    assert main([*argv, "--out", str(whole)]) == 0
    _assert_same_model(killed / "model.pt", whole / "model.pt")
    logs = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logs] == [1, 2], "each epoch logged once"
    return state


def test_backbone_train_killed_and_resumed(tmp_path):
    data = image_folder(tmp_path / "data", per_class=3, size=36)  # 3 steps per epoch: 2 mid-epoch checkpoints
    argv = ["train", "--data", str(data), "--image-size", "32", "--batch-size", "2", "--epochs", "2",
            "--workers", "0", "--polyak", "0.5", "--checkpoint-every", "1", "--device", "cpu", "--seed", "3"]
    _kill_resume_compare(tmp_path, "backbone.cli", backbone_main, argv, delay=0.3)


def test_detect_train_killed_and_resumed(tmp_path):
    ann, images = coco_set(tmp_path / "coco")
    argv = ["train", "--annotations", str(ann), "--images", str(images), "--proposals", "jitter", "--weights", "none",
            "--variant", "paper", "--crop-size", "32", "--padding", "4", "--batch-size", "64", "--max-images", "2",
            "--epochs", "2", "--checkpoint-every", "1", "--workers", "0", "--device", "cpu", "--polyak", "0.5",
            "--seed", "5"]
    _kill_resume_compare(tmp_path, "detect.cli", detect_main, argv, delay=0.05)
