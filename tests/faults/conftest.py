"""Fault tests run their in-process parts on one torch thread, like their children (OMP_NUM_THREADS=1):
the same kernels give the same numbers, and two spinning threads on a shared 2-core box are much slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
