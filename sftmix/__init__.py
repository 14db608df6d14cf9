"""SFTMix: instruction tuning with a confidence-aware Mixup regulariser (Xiao et al., arXiv 2410.05248).

`SFTMixConfig` / `SFTMixTrainer` are drop-in subclasses of TRL's `SFTConfig` / `SFTTrainer`. Imports are
lazy so that `import sftmix` (and the `sftmix` command line) start fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "SFTMixConfig": "sftmix.config",
    "SFTMixTrainer": "sftmix.trainer",
    "ConfidencePairSampler": "sftmix.sampler",
    "read_scores": "sftmix.scores",
    "attach_confidence": "sftmix.scores",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sftmix' has no attribute {name!r}")
