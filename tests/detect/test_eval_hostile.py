"""Hostile files given to `detect eval` (issue 13): ground truth read by the evaluator's own one-parse reader
(``--results`` on COCO JSON, no torch) is held to the rules of ``detect.datasets.read_coco``; results files are
read through ``backbone.safeio.load_json`` and typed strictly (``true`` is not image 1); each case is one
stderr line naming the file, exit 2, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detect.cli import main
from tests.corpus.test_hostile_data import COCO_REFUSED, _coco

#: Cases about where an image file is: the evaluator never opens images (read_coco's tests cover them).
IMAGE_PATH_CASES = {"file_name_dotdot", "file_name_absolute", "file_name_300_bytes", "file_name_empty"}


def _refused(capsys, argv: list[str], name: str, words: str, out: Path) -> None:
    code = main(argv + ["--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("detect: error: "), err
    assert name in lines[0] and words in lines[0], lines[0]
    assert len(lines[0]) < 400 and "Traceback" not in err
    assert not [p for p in out.iterdir()] if out.exists() else True


@pytest.mark.parametrize("case", sorted(set(COCO_REFUSED) - IMAGE_PATH_CASES))
def test_ground_truth_refused_by_the_evaluators_reader(tmp_path, capsys, case):
    edit, words = COCO_REFUSED[case]
    gt = _coco(tmp_path, edit)
    results = tmp_path / "res.json"
    results.write_text("[]")
    _refused(capsys, ["eval", "--annotations", str(gt), "--results", str(results)], "gt.json", words, tmp_path / "ev")


def _gt(tmp_path: Path) -> Path:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                                         {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
                              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]}],
                              "categories": [{"id": 1, "name": "thing"}]}))
    return gt


GOOD = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 0.5}

RESULTS_REFUSED = {  # name -> (results text, words)
    "bool_image_id": (json.dumps([{**GOOD, "image_id": True}]), "image_id True, a bool"),
    "bool_category_id": (json.dumps([{**GOOD, "category_id": True}]), "category_id True, a bool"),
    "float_image_id": (json.dumps([{**GOOD, "image_id": 1.0}]), "image_id 1.0, a float"),
    "list_image_id": (json.dumps([{**GOOD, "image_id": [1]}]), "expected an integer or a string"),
    "bool_score": (json.dumps([{**GOOD, "score": True}]), "score True"),
    "bool_in_bbox": (json.dumps([{**GOOD, "bbox": [1, 1, True, 9]}]), "bbox"),
    "file_name_number": (json.dumps([{**GOOD, "file_name": 7}]), "file_name 7, expected a string"),
    "nested_100000": ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    "int_5000_digits": (json.dumps([GOOD]).replace('"image_id": 1', '"image_id": ' + "7" * 5000), "digits"),
    "not_a_list": ('{"image_id": 1}', "expected a JSON list"),
}


@pytest.mark.parametrize("case", sorted(RESULTS_REFUSED))
@pytest.mark.parametrize("path", ["fast", "dataset"])
def test_results_refused_with_one_line(tmp_path, capsys, case, path):
    """Both readers: the COCO fast path and the data-set path (--metric ilsvrc on COCO ground truth)."""
    text, words = RESULTS_REFUSED[case]
    results = tmp_path / "res.json"
    results.write_text(text)
    extra = ["--metric", "ilsvrc"] if path == "dataset" else []
    _refused(capsys, ["eval", "--annotations", str(_gt(tmp_path)), "--results", str(results), *extra], "res.json",
             words, tmp_path / "ev")


def test_fifo_and_device_as_results_do_not_hang(tmp_path, capsys):
    fifo = tmp_path / "res.json"
    os.mkfifo(fifo)
    gt = _gt(tmp_path)
    for results, words in ((fifo, "pipe"), (Path("/dev/zero"), "device")):
        _refused(capsys, ["eval", "--annotations", str(gt), "--results", str(results)], results.name, words,
                 tmp_path / "ev")
    sub = tmp_path / "sub.txt"  # an ILSVRC submission and a blacklist are bounded reads too
    for flag in ("--results", "--blacklist"):
        ann = tmp_path / "Annotations"
        ann.mkdir(exist_ok=True)
        (ann / "v1.xml").write_text("<annotation><size><width>100</width><height>80</height></size></annotation>")
        argv = ["eval", "--annotations", str(ann), "--results", str(sub if flag == "--blacklist" else fifo)]
        sub.write_text("")
        if flag == "--blacklist":
            argv += ["--blacklist", str(fifo)]
        _refused(capsys, argv, fifo.name, "pipe", tmp_path / "ev")


def test_mixed_image_id_kinds_refused_by_both_readers(tmp_path, capsys):
    """One kind of image id per file, as detect.datasets.read_coco requires: the evaluator's reader refuses
    a mix too (it used to keep the file's order, a second rule for the same file)."""
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": "img-A", "file_name": "a.png", "width": 64, "height": 48},
                                         {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
                              "annotations": [], "categories": [{"id": 5, "name": "thing"}]}))
    results = tmp_path / "res.json"
    results.write_text("[]")
    for extra in ([], ["--metric", "ilsvrc"]):
        _refused(capsys, ["eval", "--annotations", str(gt), "--results", str(results), *extra], "gt.json",
                 "image ids mix integers and strings", tmp_path / "ev")


# ----------------------------------------------------------------------------- resume readers
# (the engine's and the detect train / multibox train --resume checks; here because this change made them
# read through backbone.checkpoint.read_torch_file: they belong with tests/backbone/test_engine.py)

class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _hostile_last(folder: Path, kind: str) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    last = folder / "last.pt"
    if kind == "code":
        torch.save({"config": _Evil()}, last)
    elif kind == "fifo":
        os.mkfifo(last)
    elif kind == "nan":
        torch.save({"config": {}, "model": {"w": torch.tensor([float("nan")])}}, last)
    elif kind == "list":
        torch.save([1, 2, 3], last)
    elif kind == "no_optimizer":
        torch.save({"config": {}, "model": {}}, last)
    return last


@pytest.mark.parametrize("kind, words", [("code", "not a plain-tensor checkpoint"), ("fifo", "pipe"),
                                         ("nan", "NaN"), ("list", "not a training checkpoint"),
                                         ("no_optimizer", "(no optimizer, scheduler")])
def test_engine_resume_reads_last_pt_validated(tmp_path, kind, words):
    from backbone.engine import train
    from backbone.errors import InputError
    from tests.backbone import _engine_tasks as tasks

    _hostile_last(tmp_path, kind)
    with pytest.raises(InputError) as err:
        train(tasks.TinyNet(), tasks.NoisyDigits(), tasks.classification_loss, tasks.tiny_config(), tmp_path,
              resume=True)
    assert "last.pt" in str(err.value) and words in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("kind", ["list", "code"])
def test_detect_train_and_multibox_resume_checks_refuse_hostile_last_pt(tmp_path, kind):
    from backbone.errors import InputError
    from detect.commands.multibox import _check_resume
    from detect.commands.train import _check_resumed_split
    from proposals.multibox import MultiBoxConfig

    last = _hostile_last(tmp_path, kind)
    args = type("Args", (), {"out": tmp_path, "resume": True})()
    for check in (lambda: _check_resumed_split(args, {"image_ids": [1]}), lambda: _check_resume(tmp_path,
                                                                                               MultiBoxConfig())):
        if kind == "code":
            with pytest.raises(InputError, match="not a plain-tensor checkpoint"):
                check()
        else:  # a list where a dict was expected: one line (detect train: other images held out)
            try:
                check()
            except InputError as err:
                assert str(last.name) in str(err)
