"""Helpers shared by the memory model's accuracy tests (their real steps run on one thread: the
fixture `one_torch_thread` in tests/conftest.py)."""
from __future__ import annotations


def relative(estimate: int, measured: int) -> float:
    return abs(estimate - measured) / measured
