"""Broken, foreign and code-carrying checkpoints through every command that takes ``--weights``.

Each must be refused with one line naming the file (exit code 2, no traceback, no output file); a pickle
whose ``__reduce__`` would run ``os.system('touch marker')`` must be refused by ``weights_only`` before
anything runs (the marker file must not appear).
"""

from __future__ import annotations

import pytest

from backbone.checkpoint import load_checkpoint
from backbone.cli import main as backbone_main
from backbone.errors import InputError
from detect.cli import main as detect_main

from .conftest import assert_refused, digest, run_cli

CHECKPOINT_KINDS = ["ckpt_empty", "ckpt_text", "ckpt_pickle_code_legacy", "ckpt_pickle_code_zip",
                    "ckpt_raw_state_dict_other_arch", "ckpt_other_arch_our_format", "ckpt_future_format",
                    "ckpt_list", "ckpt_truncated", "ckpt_truncated_tail"]


@pytest.mark.parametrize("name", CHECKPOINT_KINDS)
def test_checkpoint_kinds_refused_by_every_command(corpus, tmp_path, name):
    kind = corpus[name]
    image = corpus["grayscale_png"].path
    coco = corpus["coco_valid"].path
    before = digest([kind.path, image, coco])
    out_json = tmp_path / "dets.json"
    runs = [
        ("detect", detect_main, ["run", str(image), "--weights", str(kind.path), "--fast", "--device", "cpu",
                                 "--out", str(out_json)], [out_json]),
        ("detect", detect_main, ["eval", "--annotations", str(coco), "--weights", str(kind.path), "--fast",
                                 "--device", "cpu", "--out", str(tmp_path / "ev")], [tmp_path / "ev" / "summary.json"]),
        ("detect", detect_main, ["proposals", str(image), "--method", "multibox", "--weights", str(kind.path),
                                 "--out", str(tmp_path / "p.json")], [tmp_path / "p.json"]),
        ("backbone", backbone_main, ["classify", str(image), "--weights", str(kind.path)], []),
    ]
    for prog, main, argv, outputs in runs:
        outcome = run_cli(main, argv)
        line = assert_refused(outcome, prog, names=kind.path, outputs=outputs)
        if "pickle_code" in name:
            assert "refused" in line, line
        elif name not in ("ckpt_raw_state_dict_other_arch", "ckpt_future_format", "ckpt_list") or prog == "detect":
            # backbone classify also takes raw state dicts: it reports their mismatch instead
            assert any(p.lower() in line.lower() for p in kind.problem.split("|")), (name, line)
        if "marker" in kind.meta:
            assert not kind.meta["marker"].exists(), "unpickling ran the payload"
    assert digest([kind.path, image, coco]) == before


@pytest.mark.parametrize("name", ["ckpt_pickle_code_legacy", "ckpt_pickle_code_zip"])
def test_code_carrying_pickle_refused_as_such(corpus, name):
    """Regression: torch's message for a blocked module ('unsupported GLOBAL posix.system whose module posix
    is blocked') was read as a damaged file; it must say the file was refused for carrying code."""
    kind = corpus[name]
    with pytest.raises(InputError, match="refused: not a plain-tensor checkpoint"):
        load_checkpoint(kind.path)
    assert not kind.meta["marker"].exists()


def test_backbone_checkpoint_is_not_a_region_classifier(tmp_path, corpus):
    """A checkpoint of another task (a plain backbone) given to `detect run`: one line, not a crash."""
    from backbone.checkpoint import save_checkpoint
    from backbone.weights import googlenet
    from backbone.preprocess import Preprocessing

    path = tmp_path / "backbone.pt"
    save_checkpoint(path, googlenet(variant="paper", num_classes=3, aux_logits=False),
                    class_names=["a", "b", "c"], preprocessing=Preprocessing(), config={})
    outcome = run_cli(detect_main, ["run", str(corpus["grayscale_png"].path), "--weights", str(path), "--fast",
                                    "--device", "cpu", "--out", str(tmp_path / "d.json")])
    line = assert_refused(outcome, "detect", names=path, outputs=[tmp_path / "d.json"])
    assert "region-classifier" in line


def test_ensemble_of_different_class_lists_refused(tmp_path, corpus, tiny_checkpoint):
    """Two region classifiers with another class count cannot be averaged: one line naming a file."""
    from detect.classifier import RegionClassifier
    from detect.crops import CropConfig

    other = tmp_path / "three_classes.pt"
    RegionClassifier.from_backbone(["a", "b", "c"], variant="paper", weights=None, crop=CropConfig(size=64, padding=4),
                                   aux_logits=False).save(other)
    out = tmp_path / "d.json"
    outcome = run_cli(detect_main, ["run", str(corpus["grayscale_png"].path), "--weights", str(tiny_checkpoint),
                                    str(other), "--device", "cpu", "--out", str(out)])  # --fast keeps one model
    line = assert_refused(outcome, "detect", names=other, outputs=[out])
    assert "class list" in line


def test_eval_with_model_of_other_classes_refused(tmp_path, corpus):
    """`detect eval --weights` with a classifier whose labels the ground truth lacks (5 classes vs 2)."""
    from detect.classifier import RegionClassifier
    from detect.crops import CropConfig

    other = tmp_path / "five.pt"
    RegionClassifier.from_backbone(list("abcde"), variant="paper", weights=None, crop=CropConfig(size=64, padding=4),
                                   aux_logits=False).save(other)
    outcome = run_cli(detect_main, ["eval", "--annotations", str(corpus["coco_valid"].path), "--weights", str(other),
                                    "--fast", "--device", "cpu", "--out", str(tmp_path / "ev")])
    assert_refused(outcome, "detect", names=other, outputs=[tmp_path / "ev" / "summary.json"])


@pytest.mark.parametrize("name", ["ckpt_empty", "ckpt_pickle_code_zip", "ckpt_truncated", "ckpt_other_arch_our_format"])
def test_checkpoint_kinds_refused_by_training_and_multibox_options(corpus, tiny_checkpoint, tmp_path, name):
    """Initial weights of the three training commands, `backbone eval --weights`, and `--multibox-weights`."""
    kind = corpus[name]
    coco, image = corpus["coco_valid"].path, corpus["grayscale_png"].path
    folder = tmp_path / "folder"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for src in ("grayscale_png", "rgba_png"):
            (folder / cls / corpus[src].path.name).write_bytes(corpus[src].path.read_bytes())
    common = ["--annotations", str(coco), "--images", str(coco.parent)]
    runs = [
        (detect_main, ["run", str(image), "--weights", str(tiny_checkpoint), "--multibox-weights", str(kind.path),
                       "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "d.json")], [tmp_path / "d.json"]),
        (detect_main, ["train", *common, "--proposals", "jitter", "--weights", str(kind.path), "--crop-size", "32",
                       "--padding", "4", "--batch-size", "4", "--out", str(tmp_path / "t")],
         [tmp_path / "t" / "model.pt", tmp_path / "t" / "last.pt"]),
        (detect_main, ["multibox", "train", *common, "--weights", str(kind.path), "--input-size", "64", "--priors",
                       "2", "--batch-size", "1", "--out", str(tmp_path / "m")],
         [tmp_path / "m" / "model.pt", tmp_path / "m" / "last.pt"]),
        (backbone_main, ["train", "--data", str(folder), "--weights", str(kind.path), "--image-size", "32",
                         "--batch-size", "2", "--out", str(tmp_path / "b")],
         [tmp_path / "b" / "model.pt", tmp_path / "b" / "last.pt"]),
        (backbone_main, ["eval", "--data", str(folder), "--weights", str(kind.path)], []),
    ]
    for main, argv, outputs in runs:
        prog = "detect" if main is detect_main else "backbone"
        outcome = run_cli(main, argv)
        line = assert_refused(outcome, prog, names=kind.path, outputs=outputs)
        assert any(p.lower() in line.lower() for p in kind.problem.split("|")), (argv[0], line)
    if "marker" in kind.meta:
        assert not kind.meta["marker"].exists()


@pytest.mark.parametrize("name", ["ckpt_truncated", "ckpt_pickle_code_zip", "ckpt_empty"])
def test_broken_imagenet_file_in_the_hub_cache(corpus, tmp_path, monkeypatch, name):
    """The default weights (torchvision's ImageNet file in torch hub's cache) damaged or replaced: `backbone
    classify` and zero-shot `detect run` name that file in one line; nothing is downloaded over it."""
    kind = corpus[name]
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    target = cache / "googlenet-1378be20.pth"
    target.write_bytes(kind.path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("GOINGDEEPER_OFFLINE", "1")
    image = corpus["grayscale_png"].path
    for prog, main, argv in [("backbone", backbone_main, ["classify", str(image)]),
                             ("detect", detect_main, ["run", str(image), "--fast", "--workers", "0", "--device", "cpu",
                                                      "--out", str(tmp_path / "d.json")])]:
        line = assert_refused(run_cli(main, argv), prog, names=target, outputs=[tmp_path / "d.json"])
        assert any(p.lower() in line.lower() for p in kind.problem.split("|")), line
    assert target.read_bytes() == kind.path.read_bytes()
    if "marker" in kind.meta:
        assert not kind.meta["marker"].exists()
