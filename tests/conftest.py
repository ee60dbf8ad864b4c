"""Fixtures shared by all test packages.

Team data lives in ``../shared/data`` beside the checkout (override with ``GOINGDEEPER_SHARED_DATA``).
Tests that need it skip when it is absent, unless ``REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``),
in which case they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("GOINGDEEPER_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        msg = f"shared team data not found at {path} (set GOINGDEEPER_SHARED_DATA)"
        if os.environ.get("REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: skip (or fail under REQUIRE_SHARED_DATA=1) when absent."""
    return _require(_shared_data_dir())


@pytest.fixture(scope="session")
def coco128(shared_data: Path) -> dict[str, Path]:
    """Paths of the coco128 set: ``{"annotations": json file, "images": folder}``."""
    root = _require(shared_data / "coco128")
    return {"annotations": root / "annotations" / "instances_train2017.json", "images": root / "train2017"}


@pytest.fixture(scope="session")
def synsets(shared_data: Path) -> dict[str, Path]:
    """Paths of ``imagenet1k.tsv`` and ``ilsvrc_det200.tsv``."""
    root = _require(shared_data / "synsets")
    return {"imagenet1k": root / "imagenet1k.tsv", "det200": root / "ilsvrc_det200.tsv"}


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """One intra-op thread for the whole suite: the subprocess tests (torchrun, kill-and-resume) run with
    OMP_NUM_THREADS=1 and compare numbers with in-process runs, and on a busy machine OpenMP's spin-waiting
    threads cost several times the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
