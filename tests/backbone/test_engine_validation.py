"""The engine's per-epoch validation: recorded metrics, best.pt, resume, and no effect on training.

The validate functions here are stand-ins whose metric follows a fixed per-epoch table, so the epoch
best.pt must come from is known in advance; each keeps a copy of the weights it was shown.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backbone.engine import seed_everything, train

sys.path.insert(0, str(Path(__file__).parent))
import _engine_tasks as tasks  # noqa: E402


class TableValidation:
    """``validate(model, epoch)`` returning ``{"score": table[epoch - 1], "epoch_x2": 2 * epoch}``; keeps the
    weights, mode and grad mode it saw, and draws random numbers from every generator (as real validation
    code may, e.g. a DataLoader or selective search)."""

    def __init__(self, table: list[float]) -> None:
        self.table, self.seen, self.modes = table, {}, []

    def __call__(self, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        self.seen[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.modes.append((model.training, torch.is_grad_enabled()))
        torch.rand(100), np.random.rand(100), random.random()
        model(torch.randn(4, 3, 8, 8))  # a forward pass in eval mode (dropout off)
        return {"score": self.table[epoch - 1], "epoch_x2": 2.0 * epoch}


def _run(out: Path, *, validate=None, best_metric=None, epochs: int = 4, resume: bool = False):
    seed_everything(0)
    model = tasks.TinyNet(dropout=0.3)
    return train(model, tasks.NoisyDigits(24), tasks.classification_loss, tasks.tiny_config(epochs=epochs), out,
                 resume=resume, validate=validate, best_metric=best_metric)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_metrics_are_recorded_and_best_pt_is_the_best_epoch(tmp_path):
    table = [math.nan, 0.7, 0.4, 0.7]  # NaN never counts; a tie later does not replace the first best
    val = TableValidation(table)
    result = _run(tmp_path, validate=val, best_metric="score")
    records = _records(tmp_path)
    assert [r["val_epoch_x2"] for r in records] == [2.0, 4.0, 6.0, 8.0]
    assert [r["val_score"] for r in records][1:] == table[1:] and math.isnan(records[0]["val_score"])
    assert all(r["val_time_s"] >= 0 for r in records)
    assert val.modes == [(False, False)] * 4  # eval mode, no gradients
    rows = list(csv.DictReader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    assert [float(r["val_score"]) for r in rows][1:] == table[1:]
    assert list(rows[0])[-3:] == ["val_score", "val_epoch_x2", "val_time_s"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.best == {"metric": "val_score", "value": 0.7, "epoch": 2}
    assert result.best_path == tmp_path / "best.pt"
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best.keys() == torch.load(tmp_path / "model.pt", weights_only=True).keys()  # same writer, same format
    assert _same(best["model"], val.seen[2])
    assert not _same(best["model"], val.seen[4])
    # validation saw the Polyak average (what model.pt holds at the end), not the raw weights
    assert _same(val.seen[4], torch.load(tmp_path / "model.pt", weights_only=True)["model"])
    assert not _same(val.seen[4], torch.load(tmp_path / "last.pt", weights_only=True)["model"])
    assert torch.load(tmp_path / "last.pt", weights_only=True)["best"] == result.best


def test_validation_changes_neither_the_weights_nor_the_random_state(tmp_path):
    plain = _run(tmp_path / "plain", epochs=3)
    after_plain = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    validated = _run(tmp_path / "val", epochs=3, validate=TableValidation([0.1, 0.2, 0.3]), best_metric="score")
    after_val = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert _same(plain.model.state_dict(), validated.model.state_dict())
    raw = [torch.load(d / "last.pt", weights_only=True)["model"] for d in (tmp_path / "plain", tmp_path / "val")]
    assert _same(*raw)
    assert torch.equal(after_plain[0], after_val[0])
    assert np.array_equal(after_plain[1], after_val[1]) and after_plain[2] == after_val[2]


def test_resume_keeps_the_best(tmp_path):
    table = [0.1, 0.9, 0.3, 0.5]
    first = _run(tmp_path / "a", epochs=2, validate=TableValidation(table), best_metric="score")
    assert first.best == {"metric": "val_score", "value": 0.9, "epoch": 2}
    resumed_val = TableValidation(table)
    resumed = _run(tmp_path / "a", epochs=4, resume=True, validate=resumed_val, best_metric="score")
    assert sorted(resumed_val.seen) == [3, 4]
    assert resumed.best == first.best and resumed.best_path == tmp_path / "a" / "best.pt"
    straight = _run(tmp_path / "b", epochs=4, validate=TableValidation(table), best_metric="score")
    best_a, best_b = (torch.load(d / "best.pt", weights_only=True)["model"] for d in (tmp_path / "a", tmp_path / "b"))
    assert _same(best_a, best_b)
    assert _same(resumed.model.state_dict(), straight.model.state_dict())
    rows = list(csv.DictReader(io.StringIO((tmp_path / "a" / "metrics.csv").read_text())))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # the epochs before the resume are kept


def test_best_metric_must_be_a_validation_key(tmp_path):
    with pytest.raises(ValueError, match="best_metric 'AP50' is not among the validation metrics"):
        _run(tmp_path, epochs=1, validate=TableValidation([0.5]), best_metric="AP50")


def test_without_best_metric_no_best_pt(tmp_path):
    result = _run(tmp_path, epochs=1, validate=TableValidation([0.5]))
    assert result.best is None and not (tmp_path / "best.pt").exists()
    assert _records(tmp_path)[0]["val_score"] == 0.5


@pytest.mark.slow
def test_two_processes_share_the_validation_numbers(tmp_path):
    """torchrun with 2 CPU processes: rank 0 validates, both ranks' histories hold its numbers, and the
    result equals one process (as tests/backbone/test_ddp.py checks without validation)."""
    import os
    import subprocess

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    histories = [json.loads((out / f"history{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["val_score"] for r in histories[0]] == [r["val_score"] for r in histories[1]] == [0.2, 0.8]
    assert json.loads((out / "calls.json").read_text()) == {"0": [1, 2]}  # rank 1 never validated
    single = _ddp_task(tmp_path / "single")
    assert single.best == torch.load(out / "last.pt", weights_only=True)["best"] == {
        "metric": "val_score", "value": 0.8, "epoch": 2}
    ddp_best = torch.load(out / "best.pt", weights_only=True)["model"]
    for k, v in torch.load(tmp_path / "single" / "best.pt", weights_only=True)["model"].items():
        assert torch.allclose(ddp_best[k], v, rtol=1e-4, atol=1e-6), k


def _ddp_task(out: Path):
    """2 epochs of the tiny task without dropout (so 2 ranks equal 1), validated by a 2-entry table."""
    import os

    calls: dict[str, list[int]] = {}

    def validate(model, epoch):
        calls.setdefault(os.environ.get("RANK", "0"), []).append(epoch)
        return {"score": [0.2, 0.8][epoch - 1]}

    seed_everything(0)
    result = train(tasks.TinyNet(), tasks.NoisyDigits(48), tasks.classification_loss, tasks.tiny_config(epochs=2),
                   out, validate=validate, best_metric="score")
    rank = os.environ.get("RANK", "0")
    (out / f"history{rank}.json").write_text(json.dumps(list(result.history)))
    if calls:
        (out / "calls.json").write_text(json.dumps(calls))
    return result


if __name__ == "__main__":  # run by torchrun in test_two_processes_share_the_validation_numbers
    _ddp_task(Path(sys.argv[1]))
