"""Session fixtures of the bad-input corpus: the corpus itself (built once into a temporary folder), a tiny
region-classifier checkpoint, and helpers that run a CLI in-process and check the failure contract."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pytest
import torch

from .make_corpus import Kind, build_corpus


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init region classifier (paper variant, 64 px crops, classes "thing"/"other" with COCO
    category ids 1 and 2, matching the corpus' COCO files); its head biased so that detections appear."""
    from backbone.preprocess import Preprocessing
    from detect.classifier import RegionClassifier
    from detect.crops import CropConfig

    torch.manual_seed(0)
    rc = RegionClassifier.from_backbone(["thing", "other"], variant="paper", weights=None,
                                        crop=CropConfig(size=64, padding=4), category_ids=[1, 2], aux_logits=False)
    with torch.no_grad():
        rc.model.fc.bias.copy_(torch.tensor([0.0, 3.0, 2.0]))
    # `backbone classify` takes its resize/crop from here: 72 -> 64 px keeps its forward passes cheap
    rc.preprocessing = Preprocessing(resize=72, crop=64)
    path = tmp_path_factory.mktemp("ckpt") / "rc.pt"
    rc.save(path, config={"made_by": "tests/corpus"})
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, tiny_checkpoint) -> dict[str, Kind]:
    """Every corpus kind, ``{name: Kind}`` (see ``make_corpus.py``)."""
    return build_corpus(tmp_path_factory.mktemp("corpus"), valid_checkpoint=tiny_checkpoint)


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(main: Callable[[list[str]], int], argv: list[str]) -> Outcome:
    """Run a console script's ``main(argv)`` in-process, capturing stdout/stderr (argparse exits too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(int(code), out.getvalue(), err.getvalue())


def digest(paths: Iterable[Path]) -> dict[Path, str]:
    """sha256 of every file under ``paths`` (files or folders); unreadable/absent entries are skipped."""
    result = {}
    for p in paths:
        p = Path(p)
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
        for f in files:
            with contextlib.suppress(OSError):
                result[f] = hashlib.sha256(f.read_bytes()).hexdigest()
    return result


def assert_refused(outcome: Outcome, prog: str, kind: Kind | None = None, *, names: str | os.PathLike | None = None,
                   outputs: Iterable[Path] = ()) -> str:
    """The failure contract: exit code 2, exactly one stderr line ``prog: error: <file>: <problem>`` naming
    the file and the kind's problem, no traceback, and no output file or ``*.tmp`` left. Returns the line."""
    lines = [ln for ln in outcome.err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"{prog}: error:")]
    assert outcome.code == 2, f"exit code {outcome.code}, stderr: {outcome.err!r}"
    assert "Traceback" not in outcome.err, outcome.err
    assert len(errors) == 1, f"expected one error line, got: {lines!r}"
    line = errors[0]
    if names is not None or kind is not None:
        name = Path(names if names is not None else kind.path)
        assert name.name in line, f"error line does not name {name.name}: {line!r}"
    if kind is not None and kind.problem:
        assert any(p.lower() in line.lower() for p in kind.problem.split("|")), \
            f"{kind.name}: expected one of {kind.problem!r} in {line!r}"
    for out in outputs:
        out = Path(out)
        assert not out.exists(), f"partial output {out} left behind"
        if out.parent.exists():
            tmps = [t.name for t in out.parent.iterdir() if t.name.endswith(".tmp")]
            assert not tmps, f"temporary files left: {tmps}"
    return line


def root_reads_everything() -> bool:
    """True when permissions do not stop this process from reading a chmod-000 file (root, CAP_DAC_*)."""
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            with open(f.name, "rb"):
                return True
        except PermissionError:
            return False
