"""satnet: self-configuring medical image segmentation with SAT (Select-Attend-Transfer) skips."""
from __future__ import annotations

__version__ = "0.1.0"
