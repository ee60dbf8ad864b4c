"""`detect run` end to end on real photos with a checkpoint made here (random init: the numbers are not
meaningful, the plumbing is): table, COCO-results JSON, visualisations, torchrun sharding, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import skimage.data
import torch

from backbone.images import read_image
from detect.classifier import RegionClassifier
from detect.cli import main
from detect.crops import CropConfig
from detect.pipeline import Detector, DetectorConfig
from detect.structures import Detections
from detect.classifier import Ensemble

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    rc = RegionClassifier.from_backbone(["person", "cat", "rocket"], variant="paper", weights=None,
                                        crop=CropConfig(size=64, padding=4), category_ids=[1, 17, 90],
                                        aux_logits=False)
    # a large background-vs-class bias spread keeps some detections above any threshold
    with torch.no_grad():
        rc.model.fc.bias.copy_(torch.tensor([0.0, 3.0, 2.0, 1.0]))
    path = tmp_path_factory.mktemp("ckpt") / "rc.pt"
    rc.save(path, config={"made_by": "test_run_cli"})
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos with space")
    cv2.imwrite(str(folder / "astronaut.png"), skimage.data.astronaut()[::2, ::2, ::-1])
    cv2.imwrite(str(folder / "000000000042.jpg"), skimage.data.coffee()[::2, ::2, ::-1])
    return folder


def test_detector_on_real_photo(checkpoint, photos):
    detector = Detector(Ensemble.from_checkpoints([checkpoint]), DetectorConfig(fast=True, score_threshold=0.0),
                        device="cpu")
    image = read_image(photos / "astronaut.png")
    out = detector.detect(image)
    dets, props = out.detections, out.proposals
    assert isinstance(dets, Detections) and 0 < len(dets) <= 100
    assert 0 < len(props) <= DetectorConfig().fast_max_proposals
    h, w = image.shape[:2]
    assert (dets.boxes[:, 0] >= 0).all() and (dets.boxes[:, 2] <= w).all() and (dets.boxes[:, 3] <= h).all()
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    assert set(dets.labels.tolist()) <= {1, 2, 3}
    assert out.timing.proposals > 0 and out.timing.classify > 0


def test_run_writes_table_json_and_vis(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "dets.json"
    rc = main(["run", str(photos), "--weights", str(checkpoint), "--fast", "--device", "cpu",
               "--score-threshold", "0.05", "--out", str(out), "--save-vis", str(tmp_path / "vis")])
    assert rc == 0
    table = capsys.readouterr().out
    assert "astronaut.png" in table and "000000000042.jpg" in table and "proposals" in table
    rows = json.loads(out.read_text())
    assert rows, "random classifier with a biased head must give detections"
    assert {r["image_id"] for r in rows} <= {42, 2}  # COCO-named file keeps its id; the other gets its index
    assert {r["category_id"] for r in rows} <= {1, 17, 90}
    for r in rows:  # --score-threshold (the display threshold) hides table rows; --out keeps scores >= 0.01
        assert len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0 and 0.01 <= r["score"] <= 1
    run_info = json.loads(out.with_suffix(".run.json").read_text())
    assert run_info["config"]["fast"] is True and run_info["weights"] == [str(checkpoint)]
    vis = read_image(tmp_path / "vis" / "astronaut.jpg")
    assert vis.shape == read_image(photos / "astronaut.png").shape
    assert not list(tmp_path.glob("**/*.tmp")), "no temporary files left behind"


def test_ensemble_of_two_same_as_averaging(checkpoint, photos, tmp_path):
    one = Detector(Ensemble.from_checkpoints([checkpoint]), DetectorConfig(fast=True), device="cpu")
    two = Detector(Ensemble.from_checkpoints([checkpoint, checkpoint]), DetectorConfig(fast=True), device="cpu")
    image = read_image(photos / "astronaut.png")
    a, b = one.detect(image).detections, two.detect(image).detections
    torch.testing.assert_close(a.scores, b.scores)  # averaging identical members changes nothing


def _text_as_jpg(folder: Path) -> Path:
    (folder / "bad.jpg").write_text("not an image")
    return folder / "bad.jpg"


def _empty_folder(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "missing.jpg", "no such file"),
    (_empty_folder, "no image files"),
])
def test_bad_inputs_one_line_exit_2(checkpoint, tmp_path, capsys, make, problem):
    target = make(tmp_path)
    out = tmp_path / "dets.json"
    rc = main(["run", str(target), "--weights", str(checkpoint), "--fast", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and problem in err and str(target) in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unreadable_only_image_is_one_error_line_and_no_output(checkpoint, tmp_path, capsys):
    target = _text_as_jpg(tmp_path)
    out = tmp_path / "dets.json"
    rc = main(["run", str(target), "--weights", str(checkpoint), "--fast", "--device", "cpu", "--out", str(out)])
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("detect: error: ")]
    assert rc == 2 and len(errors) == 1 and f"{target}: not a readable image" in errors[0]
    assert not out.exists()


def test_wrong_checkpoint_and_output_over_input(checkpoint, photos, tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"\x00" * 100)
    assert main(["run", str(photos / "astronaut.png"), "--weights", str(bogus), "--device", "cpu"]) == 2
    assert "bogus.pt" in capsys.readouterr().err
    image = photos / "astronaut.png"
    before = image.read_bytes()
    # --out pointing at an input image is refused before anything runs
    assert main(["run", str(image), "--weights", str(checkpoint), "--device", "cpu", "--out", str(image)]) == 2
    assert image.read_bytes() == before


def test_zero_shot_offline_names_the_file(tmp_path, photos, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")
    assert main(["run", str(photos / "astronaut.png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "googlenet-1378be20.pth" in err and str(tmp_path / "hub") in err and len(err.strip().splitlines()) == 1
    assert "detect demo" in err  # the offline way to see the detector work


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(checkpoint, photos, tmp_path):
    """Sharded inference over 2 gloo processes gives exactly the single-process output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    common = ["run", str(photos), "--weights", str(checkpoint), "--fast", "--device", "cpu", "--quiet",
              "--score-threshold", "0.05"]
    single = tmp_path / "one.json"
    subprocess.run([sys.executable, "-m", "detect", *common, "--out", str(single)], check=True, env=env,
                   timeout=300)
    sharded = tmp_path / "two.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                    str(29500 + os.getpid() % 1000), "-m", "detect", *common, "--out", str(sharded)],
                   check=True, env=env, timeout=300)
    assert json.loads(single.read_text()) == json.loads(sharded.read_text())
    assert json.loads(sharded.with_suffix(".run.json").read_text())["world_size"] == 2


def test_zero_shot_default_with_placed_file_writes_ilsvrc_submission(tmp_path, photos, monkeypatch, capsys):
    """The no-weights default loads torchvision's ImageNet GoogLeNet file from torch hub's cache (here a
    random-init state dict placed by hand: offline, no download) and writes the ILSVRC DET format."""
    import torchvision

    hub = tmp_path / "hub"
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    torch.save(state, hub / "hub" / "checkpoints" / "googlenet-1378be20.pth")
    monkeypatch.setenv("TORCH_HOME", str(hub))
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")
    out = tmp_path / "dets.json"
    assert main(["run", str(photos / "astronaut.png"), "--fast", "--device", "cpu", "--score-threshold", "0",
                 "--max-detections", "5", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert 0 < len(rows) <= 5 and all(str(r["category_id"]).startswith("n") for r in rows)  # DET wnids
    lines = out.with_suffix(".ilsvrc.txt").read_text().splitlines()
    assert len(lines) == len(rows)
    for line in lines:
        index, label, score, x1, y1, x2, y2 = line.split()
        assert index == "1" and 1 <= int(label) <= 200 and 1 <= int(x1) <= int(x2) and 1 <= int(y1) <= int(y2)


def test_overlapped_proposal_workers_match_in_process(checkpoint, photos, tmp_path):
    """Selective search in worker processes (overlapped with classification) gives the same detections as
    in-process, and an unreadable image in the folder stops the run with its own name."""
    from backbone.errors import InputError

    detector = Detector(Ensemble.from_checkpoints([checkpoint]), DetectorConfig(fast=True), device="cpu")
    paths = sorted(photos.iterdir())
    inline = [r for r, _ in detector.detect_paths(paths, workers=1)]
    pooled = [r for r, _ in detector.detect_paths(paths, workers=2)]
    assert [r.path for r in inline] == [r.path for r in pooled]
    for a, b in zip(inline, pooled):
        assert a.num_proposals == b.num_proposals
        torch.testing.assert_close(a.detections.boxes, b.detections.boxes)
        torch.testing.assert_close(a.detections.scores, b.detections.scores)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        list(detector.detect_paths([paths[0], bad], workers=2))
    # detect_each goes on after it, in worker-process mode too, and names it
    outcomes = list(detector.detect_each([bad, paths[0]], workers=2))
    assert [o.ok for o in outcomes] == [False, True] and "broken.jpg" in str(outcomes[0].error)
    torch.testing.assert_close(outcomes[1].result.detections.scores, inline[0].detections.scores)


@pytest.mark.parametrize("quiet", [False, True])
def test_file_names_with_control_characters_cannot_forge_output_lines(checkpoint, tmp_path, capsys, quiet):
    """A file named with a newline and an ANSI escape (issue 13 item 10) is printed escaped: the table
    keeps one head line per image and no raw escape reaches the terminal."""
    folder = tmp_path / "odd"
    folder.mkdir()
    name = "a\nfake: error\x1b[31m.png"
    cv2.imwrite(str(folder / name), skimage.data.astronaut()[::4, ::4, ::-1])
    assert main(["run", str(folder), "--weights", str(checkpoint), "--fast", "--device", "cpu",
                 *(["--quiet"] if quiet else [])]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\nfake: error" not in out
    assert "a\\nfake: error\\x1b[31m.png" in out.splitlines()[0]
