"""Stage 1 of SFTMix: training dynamics -> every training example's confidence -> the scores file.

    from sftmix.dynamics import DynamicsConfig, compute_dynamics
    path = compute_dynamics(model, train_dataset, DynamicsConfig(scores_path="out/scores.parquet"),
                            processing_class=tokenizer, sft_args=sft_config)

Modules, each importing only those before it: `config` (settings, the SFTConfigs of the pass and their keys),
`examples` (checks before any work, row tracking and exclusions), `scoring` (the forward-only pass), `reference`
(`DynamicsTrainer`, SFTTrainer's data preparation, the checkpoint plan and callback of the reference run), `split`
(confidence, Cartography statistics, the split, the scores table), `output` (scores file, per-checkpoint cache,
data map and histogram), `compute` (the pass). Imports are lazy: `DynamicsConfig` loads without torch or TRL.
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
