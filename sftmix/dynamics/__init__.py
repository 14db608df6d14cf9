"""Stage 1 of SFTMix: training dynamics -> every training example's confidence -> the scores file (docs/dynamics.md).

Modules, each importing only those before it: `config`, `examples`, `scoring`, `reference` (`DynamicsTrainer`, the
checkpoint plan), `split`, `output`, `compute` (`compute_dynamics`). Lazy: `DynamicsConfig` loads without torch or TRL.
"""

from __future__ import annotations

import importlib

from sftmix.dynamics.config import DynamicsConfig

_LAZY = {
    "compute_dynamics": "sftmix.dynamics.compute",
    "DynamicsTrainer": "sftmix.dynamics.reference",
    "CheckpointScores": "sftmix.dynamics.scoring",
}

__all__ = ["DynamicsConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sftmix.dynamics' has no attribute {name!r}")
