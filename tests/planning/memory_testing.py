"""Helpers shared by the memory model's accuracy tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Real steps on one thread: on a shared 2-core machine OpenMP's spinning threads cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relative(estimate: int, measured: int) -> float:
    return abs(estimate - measured) / measured
