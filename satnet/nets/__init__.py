"""Segmentation networks with SAT skip connections; see docs/architecture.md."""
from __future__ import annotations

from satnet.nets.spec import ARCH_NAMES, GATE_INITS, NORMS, SKIP_MODES, NetworkSpec

__all__ = ["ARCH_NAMES", "GATE_INITS", "NORMS", "SKIP_MODES", "NetworkSpec"]
