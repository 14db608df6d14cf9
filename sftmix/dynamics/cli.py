"""`sftmix dynamics`: stage 1 alone, from a recipe (its `dynamics:` section) or from flags.

sftmix dynamics --config recipe.yaml [--max_length 512 ...]
accelerate launch --config_file accelerate_configs/zero3.yaml -m sftmix dynamics --config recipe.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path


def run_dynamics_cli(argv: list[str] | None = None) -> Path:
    """Parse `--config RECIPE` plus recipe overrides, run the dynamics stage, print and return the scores path."""
    from sftmix import pipeline
    from sftmix.recipe import load_recipe

    parser = argparse.ArgumentParser(prog="sftmix dynamics", description=__doc__)
    parser.add_argument("--config", required=True, help="Recipe YAML (recipes/...).")
    args, rest = parser.parse_known_args(argv)
    path = pipeline.run_dynamics(load_recipe(args.config, rest))
    print(f"Scores file: {path}")
    return path
