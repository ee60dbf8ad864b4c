"""The shared training loop: order, determinism across workers, SIGKILL + resume, Polyak, errors."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from backbone.engine import EpochBatches, TrainConfig, epoch_permutation, train
from backbone.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
import _engine_tasks as tasks  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_epoch_batches_split_the_global_batch_across_ranks():
    n, batch = 50, 8
    single = list(EpochBatches(n, batch, seed=3, epoch=2))
    assert len(single) == n // batch and all(len(b) == batch for b in single)
    perm = epoch_permutation(n, 3, 2).tolist()
    assert [i for b in single for _, i in b] == perm[: len(single) * batch]
    assert epoch_permutation(n, 3, 2).tolist() != epoch_permutation(n, 3, 3).tolist()
    ranks = [list(EpochBatches(n, batch, seed=3, epoch=2, rank=r, world_size=2)) for r in range(2)]
    for step, global_batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(global_batch)
        assert not set(ranks[0][step]) & set(ranks[1][step])
    resumed = list(EpochBatches(n, batch, seed=3, epoch=2, start_step=4))
    assert resumed == single[4:]


def test_train_learns_and_writes_its_files(tmp_path):
    result = tasks.run(str(tmp_path / "run"), epochs=4)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "acc", "lr", "samples_per_s", "time_s", "step"} <= records[0].keys()
    assert not any(k.startswith("val_") for k in records[0])  # no validation asked for
    assert records[0]["world_size"] == 1
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["acc"] > 1 / 3 + 0.2  # chance is 1/3
    assert records[-1]["step"] == result.global_step == 4 * (48 // 8)
    last = torch.load(result.last_path, weights_only=True)
    assert (last["epoch"], last["step"]) == (4, 0)
    final = torch.load(result.model_path, weights_only=True)
    _assert_same(final["model"], _params(result.model))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["batch_size"] == 8 and config["batch"] == {"samples_per_batch": 8}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "run" / "metrics.csv").read_text())))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert list(rows[0])[:6] == ["epoch", "step", "loss", "acc", "lr", "time_s"]
    assert float(rows[-1]["loss"]) == pytest.approx(records[-1]["loss"], rel=1e-5)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "run" / "best.pt").exists() and result.best is None


def test_learning_rate_decays_every_n_epochs(tmp_path):
    model = tasks.TinyNet()
    cfg = tasks.tiny_config(epochs=4, lr_decay=0.5, lr_decay_every=2, polyak=0)
    result = train(model, tasks.NoisyDigits(16), tasks.classification_loss, cfg, tmp_path)
    assert [r["lr"] for r in result.history] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert result.model is model  # polyak = 0: the final model is the trained one


def test_polyak_average_is_not_the_last_weights(tmp_path):
    result = tasks.run(str(tmp_path), epochs=2)
    raw = torch.load(result.last_path, weights_only=True)["model"]
    averaged = _params(result.model)
    assert any(not torch.allclose(raw[k], averaged[k]) for k in raw)


def test_worker_count_does_not_change_the_result(tmp_path):
    a = tasks.run(str(tmp_path / "w0"), epochs=2, dropout=0.3, workers=0)
    b = tasks.run(str(tmp_path / "w2"), epochs=2, dropout=0.3, workers=2)
    _assert_same(_params(a.model), _params(b.model))


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # as the suite (conftest): bitwise equal
    proc = subprocess.Popen([sys.executable, str(Path(tasks.__file__)), str(out), "--epochs", "3",
                             "--dropout", "0.3", "--item-delay", "0.02"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["global_step"] < 3 * 6 and state["step"] > 0  # killed mid-epoch, mid-run
    assert not (out / "model.pt").exists()
    resumed = tasks.run(str(out), epochs=3, dropout=0.3, resume=True)
    straight = tasks.run(str(tmp_path / "straight"), epochs=3, dropout=0.3)
    assert resumed.global_step == straight.global_step
    _assert_same(_params(resumed.model), _params(straight.model))
    final_raw = torch.load(out / "last.pt", weights_only=True)["model"]
    _assert_same(final_raw, torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"])


def test_resume_refuses_a_changed_recipe_and_a_missing_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no checkpoint to resume"):
        tasks.run(str(tmp_path), resume=True)
    tasks.run(str(tmp_path), epochs=1)
    with pytest.raises(InputError, match="already holds a training run"):
        tasks.run(str(tmp_path), epochs=1)
    cfg = tasks.tiny_config(epochs=2, lr=0.5)
    with pytest.raises(InputError, match="lr=0.1, cannot resume with lr=0.5"):
        train(tasks.TinyNet(), tasks.NoisyDigits(), tasks.classification_loss, cfg, tmp_path, resume=True)
    longer = tasks.run(str(tmp_path), epochs=2, resume=True)  # more epochs is fine
    assert [r["epoch"] for r in longer.history] == [2]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_item_stops_training_naming_the_file(tmp_path, workers):
    cfg = tasks.tiny_config(workers=workers, epochs=1)
    with pytest.raises(InputError, match=r"^item5\.jpg: not a readable image"):
        train(tasks.TinyNet(), tasks.NoisyDigits(bad_index=5), tasks.classification_loss, cfg, tmp_path)


def test_too_few_samples_for_one_batch(tmp_path):
    with pytest.raises(InputError, match="fewer than one batch of 8"):
        train(tasks.TinyNet(), tasks.NoisyDigits(5), tasks.classification_loss, tasks.tiny_config(), tmp_path)


def test_divergence_is_reported(tmp_path):
    def nan_loss(model, batch, device):
        return model(batch[0]).sum() * float("nan"), {}
    with pytest.raises(InputError, match="training diverged"):
        train(tasks.TinyNet(), tasks.NoisyDigits(16), nan_loss, tasks.tiny_config(polyak=0), tmp_path)


def test_config_round_trips():
    cfg = TrainConfig(epochs=3, lr=0.5)
    assert TrainConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


@pytest.mark.gpu
def test_cuda_bf16_autocast_and_channels_last(tmp_path):
    seen = {}

    def loss_fn(model, batch, device):
        images, labels = (t.to(device) for t in batch)
        images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images)
        seen["dtype"], seen["channels_last"] = logits.dtype, model_param_is_channels_last(model)
        return torch.nn.functional.cross_entropy(logits, labels), {}

    def model_param_is_channels_last(model):
        return model.conv.weight.is_contiguous(memory_format=torch.channels_last)

    cfg = tasks.tiny_config(device="cuda", amp=True, channels_last=True, epochs=2)
    result = train(tasks.TinyNet(), tasks.NoisyDigits(), loss_fn, cfg, tmp_path)
    assert seen == {"dtype": torch.bfloat16, "channels_last": True}
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert next(result.model.parameters()).device.type == "cuda"
    assert torch.load(result.model_path, weights_only=True)["model"]["conv.weight"].dtype == torch.float32


def _recorded_lrs(monkeypatch) -> list[float]:
    """The learning rate of every SGD step the engine takes (recorded by wrapping ``SGD.step``)."""
    seen: list[float] = []
    step = torch.optim.SGD.step

    def recording(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    return seen


def test_cosine_schedule_with_warmup_sets_every_steps_rate(tmp_path, monkeypatch):
    """48 items / batch 8 = 6 steps per epoch, 2 epochs: T = 12 steps. Warm-up over 3 steps from lr / 100,
    then cosine from 0.1 to 0 (worked out by hand below, not with the engine's function)."""
    import math

    seen = _recorded_lrs(monkeypatch)
    cfg = tasks.tiny_config(epochs=2, polyak=0, lr_schedule="cosine", warmup_steps=3)
    result = train(tasks.TinyNet(), tasks.NoisyDigits(48), tasks.classification_loss, cfg, tmp_path)
    cosine = [0.1 * 0.5 * (1 + math.cos(math.pi * s / 12)) for s in range(12)]
    warm = [0.01, 0.01 + 0.99 / 3, 0.01 + 0.99 * 2 / 3] + [1.0] * 9
    assert seen == pytest.approx([c * w for c, w in zip(cosine, warm)], rel=1e-9, abs=1e-12)
    assert seen[6] == pytest.approx(0.05)  # half way: half the rate
    assert [r["lr"] for r in result.history] == pytest.approx([seen[0], seen[6]])


def test_step_schedule_with_warmup(tmp_path, monkeypatch):
    seen = _recorded_lrs(monkeypatch)
    cfg = tasks.tiny_config(epochs=4, polyak=0, lr_decay=0.5, lr_decay_every=2, warmup_steps=2)
    train(tasks.TinyNet(), tasks.NoisyDigits(48), tasks.classification_loss, cfg, tmp_path)
    assert seen == pytest.approx([0.001, 0.1 * (0.01 + 0.99 / 2)] + [0.1] * 10 + [0.05] * 12)


class _Stop(Exception):
    pass


def test_cosine_run_interrupted_and_resumed_equals_a_straight_one(tmp_path, monkeypatch):
    """The schedule restarts where the checkpoint was taken (global step 8 of 18), whatever it was before."""
    seen = _recorded_lrs(monkeypatch)
    cfg = tasks.tiny_config(epochs=3, polyak=0, lr_schedule="cosine", warmup_steps=4, checkpoint_every=4)
    calls = []

    def stopping_loss(model, batch, device):
        calls.append(1)
        if len(calls) == 10:  # after the checkpoint at step 8
            raise _Stop
        return tasks.classification_loss(model, batch, device)
    torch.manual_seed(0)
    with pytest.raises(_Stop):
        train(tasks.TinyNet(), tasks.NoisyDigits(), stopping_loss, cfg, tmp_path / "cut")
    del seen[:]
    torch.manual_seed(0)
    resumed = train(tasks.TinyNet(), tasks.NoisyDigits(), tasks.classification_loss, cfg, tmp_path / "cut",
                    resume=True)
    after_resume = list(seen)
    del seen[:]
    torch.manual_seed(0)
    straight = train(tasks.TinyNet(), tasks.NoisyDigits(), tasks.classification_loss, cfg, tmp_path / "straight")
    assert after_resume == seen[8:]
    _assert_same(_params(resumed.model), _params(straight.model))
    longer = tasks.tiny_config(epochs=4, polyak=0, lr_schedule="cosine", warmup_steps=4, checkpoint_every=4)
    with pytest.raises(InputError, match="cosine schedule ends after 3 epochs"):
        train(tasks.TinyNet(), tasks.NoisyDigits(), tasks.classification_loss, longer, tmp_path / "cut",
              resume=True)
