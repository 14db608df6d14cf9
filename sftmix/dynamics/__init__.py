"""Stage 1 of SFTMix: training dynamics -> every training example's confidence -> the scores file.

    from sftmix.dynamics import DynamicsConfig, compute_dynamics
    path = compute_dynamics(model, train_dataset, DynamicsConfig(scores_path="out/scores.parquet"),
                            processing_class=tokenizer, sft_args=sft_config)

Modules: `config` (settings), `data` (row tracking, exclusions, tokenizer checks), `prepare` (SFTTrainer's data
preparation), `scoring` (the forward-only pass), `dynamics_trainer` (SFTTrainer that trains the reference and
scores), `reference` (checkpoint plan and callback), `cache` (per-checkpoint scores on disk), `aggregate`
(confidence, Cartography statistics, split), `frame` (the scores table), `output` (scores file, metadata),
`plots` (data map, histogram), `inputs` (checks before any work), `settings` (the SFTConfigs of the pass),
`compute` (the pass), `cli`. Imports are lazy: `DynamicsConfig` loads without torch or TRL.
"""

from __future__ import annotations

import importlib

from sftmix.dynamics.config import DynamicsConfig

_LAZY = {
    "compute_dynamics": "sftmix.dynamics.compute",
    "run_dynamics_cli": "sftmix.dynamics.cli",
    "DynamicsTrainer": "sftmix.dynamics.dynamics_trainer",
    "CheckpointScores": "sftmix.dynamics.scoring",
}

__all__ = ["DynamicsConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sftmix.dynamics' has no attribute {name!r}")
