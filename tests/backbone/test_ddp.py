"""torchrun with 2 CPU processes (gloo) and the same global batch ends with the same weights as 1 process.

The task (``_engine_tasks.py``) has no BatchNorm, no dropout and a loss that is a mean over the batch,
so data-parallel SGD is the same computation up to the order of floating-point sums.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _engine_tasks as tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(tasks.__file__)), str(out), "--epochs", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in records] == [2, 2]  # really two ranks, each with half of every batch
    single = tasks.run(str(tmp_path / "single"), epochs=2)
    ddp = torch.load(out / "model.pt", weights_only=True)
    ddp_last = torch.load(out / "last.pt", weights_only=True)
    assert ddp_last["global_step"] == single.global_step == 2 * (48 // 8)
    reference = single.model.state_dict()
    for k, v in reference.items():
        assert torch.allclose(ddp["model"][k], v, rtol=1e-4, atol=1e-6), k
    raw = torch.load(tmp_path / "single" / "last.pt", weights_only=True)["model"]
    for k, v in raw.items():
        assert torch.allclose(ddp_last["model"][k], v, rtol=1e-4, atol=1e-6), k
    # and the run really trained: the weights moved away from their initialisation
    torch.manual_seed(0)
    assert not torch.allclose(tasks.TinyNet().conv.weight, reference["conv.weight"])
