"""Recipes: one YAML per experiment, in the TRL / alignment-handbook way.

Top-level keys are the fields of `DataArguments` (sftmix.data), TRL's `ModelConfig` and `SFTMixConfig`;
they are defaults that command-line flags (`--learning_rate 1e-5`) override. Two optional mappings hold the
other stages: `dynamics:` (fields of `sftmix.dynamics.DynamicsConfig`) and `evaluation:` (fields of
`sftmix.evaluation.EvalConfig`); `env:` exports environment variables. Unknown keys are errors.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SECTIONS = ("dynamics", "evaluation")


@dataclass
class Recipe:
    data: Any
    model: Any
    training: Any
    dynamics: Any | None
    evaluation: Any | None
    path: Path | None = None


def _section_classes():
    from sftmix.dynamics import DynamicsConfig
    from sftmix.evaluation import EvalConfig

    return {"dynamics": DynamicsConfig, "evaluation": EvalConfig}


def read_yaml(path: str | os.PathLike) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist. Recipes live under recipes/<model>/<task>/.")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"Recipe {path} must be a mapping of settings, got {type(raw).__name__}.")
    return raw


def _check_known(keys, known: set[str], where: str) -> None:
    unknown = [k for k in keys if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"Unknown {where} key(s): {', '.join(hints)}.")


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Parse a recipe (and command-line overrides) into its dataclasses; nothing heavy is loaded."""
    from transformers import HfArgumentParser
    from trl import ModelConfig

    from sftmix.config import SFTMixConfig
    from sftmix.data import DataArguments

    raw = read_yaml(path) if path else {}
    for key, value in (raw.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)
    sections = {name: raw.pop(name, None) for name in SECTIONS}

    parser = HfArgumentParser((DataArguments, ModelConfig, SFTMixConfig))
    known = {f.name for cls in (DataArguments, ModelConfig, SFTMixConfig) for f in fields(cls) if f.init}
    _check_known(raw, known, f"recipe {path}" if path else "recipe")
    if "use_cpu" not in raw:  # a recipe written for GPUs still runs (slowly) on a machine without one
        import torch

        raw["use_cpu"] = not torch.cuda.is_available()
    parser.set_defaults(**raw)
    data, model, training, rest = parser.parse_args_into_dataclasses(
        args=list(overrides or []), return_remaining_strings=True
    )
    if rest:
        raise ValueError(f"Unknown command-line argument(s): {' '.join(rest)}.")

    parsed = {}
    for name, cls in _section_classes().items():
        values = sections[name]
        if values is None:
            parsed[name] = None
            continue
        if not isinstance(values, dict):
            raise ValueError(f"`{name}:` in {path} must be a mapping of settings.")
        _check_known(values, {f.name for f in fields(cls) if f.init}, f"`{name}:`")
        parsed[name] = cls(**values)
    return Recipe(
        data, model, training, parsed["dynamics"], parsed["evaluation"], Path(path) if path else None
    )
