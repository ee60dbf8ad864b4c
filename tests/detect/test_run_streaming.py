"""`detect run` over many images: each table printed as soon as its image is done, bad files skipped with
one line each, per-image results on disk, and a killed run resumed to the same bytes (issue 12 part 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import skimage.data
import torch

from detect.classifier import RegionClassifier
from detect.cli import main
from detect.crops import CropConfig
from detect.pipeline import Detector

REPO = Path(__file__).resolve().parents[2]
FAST = ["--fast", "--device", "cpu", "--max-detections", "5"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    rc = RegionClassifier.from_backbone(["person", "cat", "rocket"], variant="paper", weights=None,
                                        crop=CropConfig(size=32, padding=2), category_ids=[1, 17, 90],
                                        aux_logits=False)
    with torch.no_grad():  # a biased head keeps some detections above the thresholds
        rc.model.fc.bias.copy_(torch.tensor([0.0, 3.0, 2.0, 1.0]))
    path = tmp_path_factory.mktemp("ckpt") / "rc.pt"
    rc.save(path)
    return path


def small_photos(folder: Path, n: int = 3) -> list[Path]:
    """``n`` small real photos named as COCO names them (numeric stems keep their ids in any folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    paths = []
    for k in range(n):
        image = sources[k % len(sources)][::6, ::6, ::-1]
        path = folder / f"{k + 1:012d}.jpg"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def clean(tmp_path_factory, checkpoint) -> dict:
    """An uninterrupted run over 3 good photos: its folder and output bytes."""
    root = tmp_path_factory.mktemp("clean")
    small_photos(root / "imgs")
    out = root / "dets.json"
    assert main(["run", str(root / "imgs"), "--weights", str(checkpoint), *FAST, "--out", str(out)]) == 0
    return {"folder": root / "imgs", "out": out.read_bytes(), "rows": json.loads(out.read_text())}


def test_each_table_is_printed_before_the_next_image_is_processed(checkpoint, clean, capsys, monkeypatch):
    seen_before_call: list[str] = []
    original = Detector.detect

    def spying_detect(self, image, proposals=None):
        seen_before_call.append(capsys.readouterr().out)
        return original(self, image, proposals)

    monkeypatch.setattr(Detector, "detect", spying_detect)
    assert main(["run", str(clean["folder"]), "--weights", str(checkpoint), *FAST]) == 0
    names = sorted(p.name for p in clean["folder"].iterdir())
    assert len(seen_before_call) == 3
    assert seen_before_call[0] == ""                     # nothing before the first image
    assert names[0] in seen_before_call[1]               # image 1's table before image 2 starts
    assert names[1] in seen_before_call[2] and names[2] not in seen_before_call[2]


def test_quiet_is_one_line_per_image(checkpoint, clean, capsys):
    assert main(["run", str(clean["folder"]), "--weights", str(checkpoint), *FAST, "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(" detections" in l or "person" in l or "cat" in l or "rocket" in l for l in lines)


def test_bad_files_among_good_ones_are_skipped(checkpoint, clean, tmp_path, capsys):
    folder = tmp_path / "mixed"
    small_photos(folder)
    good = (folder / "000000000002.jpg").read_bytes()
    (folder / "000000000004.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (folder / "000000000005.png").write_text("not an image")
    out = tmp_path / "dets.json"
    rc = main(["run", str(folder), "--weights", str(checkpoint), *FAST, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    bad_lines = [l for l in err.splitlines() if l.startswith("detect: error: ")]
    assert len(bad_lines) == 2
    assert "000000000004.jpg: " in bad_lines[0] and "truncated" in bad_lines[0]
    assert "000000000005.png: not a readable image" in bad_lines[1]
    assert "3 of 5 images" in err and "2 skipped, listed above" in err
    assert out.read_bytes() == clean["out"]  # the good images' results, exactly as in a clean run
    info = json.loads(out.with_suffix(".run.json").read_text())
    assert [Path(s["input"]).name for s in info["skipped"]] == ["000000000004.jpg", "000000000005.png"]
    assert not (tmp_path / "dets.json.parts").exists()


def test_strict_stops_at_the_first_bad_file(checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    small_photos(folder, 2)
    (folder / "000000000000.png").write_text("not an image")  # sorts first
    out = tmp_path / "dets.json"
    assert main(["run", str(folder), "--weights", str(checkpoint), *FAST, "--out", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "000000000000.png: not a readable image" in err and not out.exists()


def test_nothing_processed_writes_nothing(checkpoint, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_text("no")
    (folder / "b.png").write_text("no")
    out = tmp_path / "dets.json"
    assert main(["run", str(folder), "--weights", str(checkpoint), *FAST, "--out", str(out)]) == 2
    assert "0 of 2 images" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".run.json").exists()


def test_kill_then_resume_equals_uninterrupted(checkpoint, clean, tmp_path, capsys, monkeypatch):
    out = tmp_path / "dets.json"
    original = Detector.detect
    calls = []

    def dies_at_third(self, image, proposals=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, image, proposals)

    monkeypatch.setattr(Detector, "detect", dies_at_third)
    args = ["run", str(clean["folder"]), "--weights", str(checkpoint), *FAST, "--out", str(out)]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted after 2 of 3 images" in err and "--resume" in err and "Traceback" not in err
    assert not out.exists()
    (part,) = (tmp_path / "dets.json.parts").glob("rank*.jsonl")
    assert len(part.read_text().splitlines()) == 2
    with open(part, "a") as f:  # a line cut by the kill is ignored
        f.write('{"i": 2, "input": "cut')
    calls.clear()
    monkeypatch.setattr(Detector, "detect", lambda self, image, proposals=None: (calls.append(1), original(
        self, image, proposals))[1])
    assert main([*args, "--resume"]) == 0
    assert len(calls) == 1, "only the image not done before is processed"
    assert "2 done earlier: resuming" in capsys.readouterr().err
    assert out.read_bytes() == clean["out"]
    assert not (tmp_path / "dets.json.parts").exists()


def test_resume_refuses_other_options_and_nothing_to_resume(checkpoint, clean, tmp_path, capsys, monkeypatch):
    out = tmp_path / "dets.json"
    args = ["run", str(clean["folder"]), "--weights", str(checkpoint), *FAST, "--out", str(out)]
    assert main([*args, "--resume"]) == 2
    assert "--resume: no partial results" in capsys.readouterr().err
    monkeypatch.setattr(Detector, "detect", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(args) == 130
    monkeypatch.undo()
    assert main([*args, "--nms-iou", "0.5", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume: the earlier run differs in config" in err


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_subprocess_streams_first_table_before_the_last_image(checkpoint, tmp_path):
    """A real process: the first table reaches a pipe while later images are still being processed."""
    folder = tmp_path / "imgs"
    small_photos(folder, 4)
    proc = subprocess.Popen([sys.executable, "-m", "detect", "run", str(folder), "--weights", str(checkpoint),
                             *FAST, "--out", str(tmp_path / "d.json")], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        parts = tmp_path / "d.json.parts"
        done_when_first_seen = sum(len(p.read_text().splitlines()) for p in parts.glob("rank*.jsonl"))
        assert first.startswith(str(folder / "000000000001.jpg"))
        assert done_when_first_seen < 4 and proc.poll() is None
    finally:
        proc.communicate(timeout=300)
    assert proc.returncode == 0


@pytest.mark.slow
def test_ctrl_c_with_workers_is_one_line_exit_130(checkpoint, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during `--workers 2`."""
    folder = tmp_path / "imgs"
    small_photos(folder, 8)
    proc = subprocess.Popen([sys.executable, "-m", "detect", "run", str(folder), "--weights", str(checkpoint),
                             *FAST, "--workers", "2", "--out", str(tmp_path / "d.json")], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline()  # the first table: workers are running
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    lines = [l for l in err.splitlines() if not l.startswith("detect run:")]  # all but the start line
    assert len(lines) == 1 and lines[0].startswith("detect: interrupted after "), err


@pytest.mark.slow
def test_torchrun_kill_then_resume_equals_one_process(checkpoint, tmp_path):
    """2 gloo processes, killed once each rank has results on disk, resumed under torchrun: the output
    equals an uninterrupted single-process run byte for byte."""
    folder = tmp_path / "imgs"
    small_photos(folder, 6)
    common = ["run", str(folder), "--weights", str(checkpoint), *FAST, "--quiet"]
    single = tmp_path / "one.json"
    subprocess.run([sys.executable, "-m", "detect", *common, "--out", str(single)], check=True, env=_env(),
                   timeout=300, capture_output=True)
    sharded = tmp_path / "two.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(29700 + os.getpid() % 1000), "-m", "detect", *common, "--out", str(sharded)]
    proc = subprocess.Popen(torchrun, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "two.json.parts"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            files = list(parts.glob("rank*.jsonl"))
            if len(files) == 2 and all(f.read_text().count("\n") >= 1 for f in files):
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        # torchrun's ranks run in their own process groups: SIGTERM to torchrun, which passes it on to
        # them, and Python's default SIGTERM action ends them on the spot (no clean-up, like a kill)
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.wait(timeout=60)
    time.sleep(1)
    done = sum(f.read_text().count("\n") for f in parts.glob("rank*.jsonl"))
    assert 2 <= done < 6 and not sharded.exists()
    subprocess.run([*torchrun, "--resume"], check=True, env=_env(), timeout=300, capture_output=True)
    assert sharded.read_bytes() == single.read_bytes()
    assert json.loads(sharded.with_suffix(".run.json").read_text())["world_size"] == 2
