"""The `sftmix` command line. Start-up stays light: heavy libraries load inside the stage that needs them.

    sftmix run      --config RECIPE [--key value ...]   dynamics pass, SFTMix training, evaluation
    sftmix dynamics --config RECIPE [...]               stage 1 only: the scores file and data map
    sftmix train    --config RECIPE [...]               stage 2 only (needs `dynamics_path` or a column)
    sftmix check    --config RECIPE [...]               validate a recipe, print its settings and plan; no training
    sftmix eval     --model PATH [--heldout FILE --medqa FILE ...]   held-out loss, calibration, benchmarks
    sftmix recipes                                      the recipes shipped with the package
    sftmix data     medalpaca|mcq --out DIR             build the healthcare recipes' data files

RECIPE is a YAML file or the name of a shipped recipe (`quickstart`, `llama-3.1-8b/alpaca/sftmix`). Every recipe
key can be set on the command line, nested ones with dotted names (`--dynamics.num_checkpoints 3`,
`--evaluation.medqa data/medqa.jsonl`); `--key null` sets None. `sftmix run --help` lists them all.

Multi-GPU: `accelerate launch --config_file accelerate_configs/zero3.yaml -m sftmix run --config ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Errors a user can fix (bad recipe, missing file, existing checkpoints, a diverged run): one message on stderr and
# exit status 1. Anything else is a bug and keeps its traceback. SFTMIX_DEBUG=1 shows the traceback for all.
EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)

STAGES = {
    "run": "Run the whole recipe: dynamics pass, SFTMix training, then the evaluation it names.",
    "dynamics": "Stage 1: score every training example's confidence and write the scores file and data map.",
    "train": "Stage 2: SFTMix training (reads the scores file of the dynamics stage).",
    "check": "Validate a recipe without training: every problem at once, then the resolved settings and the plan.",
    "eval": "Evaluate a trained model: held-out loss, calibration, healthcare multiple-choice benchmarks.",
    "recipes": "List the recipes shipped with the package (names for --config).",
    "data": "Build the healthcare recipes' data files (MedAlpaca, MedQA, PubMedQA, MedMCQA).",
}
RECIPE_COMMANDS = ("run", "dynamics", "train", "check")
CONFIG_HELP = "Recipe YAML, or the name of a shipped recipe (`sftmix recipes`)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftmix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="store_true", help="Print the version and exit.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in STAGES.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, add_help=name == "recipes")
        if name in RECIPE_COMMANDS:
            sub.add_argument("--config", help=CONFIG_HELP)
            sub.add_argument("-h", "--help", action="store_true", help="List every setting a recipe can hold.")
    return parser


def settings_parser(command: str) -> argparse.ArgumentParser:
    """Every option a recipe can set, with its help: SFTMixConfig/SFTConfig, the model and data arguments
    (HfArgumentParser builds them from the dataclasses), and the `dynamics:` / `evaluation:` sections as
    dotted options."""
    from dataclasses import MISSING, fields

    from transformers import HfArgumentParser

    from sftmix.recipe import setting_classes

    classes = setting_classes()
    parser = HfArgumentParser(
        classes.pop(""),
        prog=f"sftmix {command}",
        description=STAGES[command] + " Recipe keys are defaults; these options override them.",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    for section, (cls,) in classes.items():
        group = parser.add_argument_group(f"`{section}:` section (--{section}.<key>)")
        for f in fields(cls):
            if not f.init:
                continue
            default = f.default if f.default is not MISSING else None
            text = f.metadata.get("help", "")
            group.add_argument(
                f"--{section}.{f.name}",
                metavar=str(getattr(f.type, "__name__", f.type)).replace("typing.", ""),
                help=f"{text} (default: {default})".replace("%", "%%"),
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    from sftmix.logs import configure_logging

    configure_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except EXPECTED_ERRORS as error:
        if os.environ.get("SFTMIX_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
            raise
        logging.getLogger("sftmix").debug("sftmix failed", exc_info=True)
        print(f"sftmix: error: {error}", file=sys.stderr)
        print("(set SFTMIX_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.version:
        from sftmix import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "eval":
        from sftmix.evaluation import run_eval_cli

        run_eval_cli(argv[argv.index("eval") + 1 :])
        return 0
    if args.command == "data":
        from sftmix.data_prep import main as data_main

        return data_main(argv[argv.index("data") + 1 :])
    if args.command == "recipes":
        from sftmix.recipe import builtin_recipes

        print("\n".join(builtin_recipes()))
        return 0
    if args.help:
        settings_parser(args.command).print_help()
        return 0
    if not args.config:
        parser.error(f"`sftmix {args.command}` needs --config RECIPE (a YAML file or a shipped recipe name)")

    from sftmix.recipe import load_recipe

    recipe = load_recipe(args.config, rest)
    if args.command == "check":
        return check(recipe)
    from sftmix import pipeline

    {"run": pipeline.run_all, "dynamics": pipeline.run_dynamics, "train": pipeline.run_train}[args.command](recipe)
    return 0


def check(recipe) -> int:
    """`sftmix check`: the problems (exit 1), or the resolved settings and the plan (exit 0)."""
    from sftmix import plan
    from sftmix.checks import check_recipe, checked_data

    check_recipe(recipe)
    train, held_out = checked_data(recipe.data, recipe.dynamics)
    print(f"Recipe {recipe.path}: no problems found.\n")
    print("Settings")
    print(plan.render_settings(recipe))
    print("\nPlan")
    for line in plan.build_plan(recipe, len(train), None if held_out is None else len(held_out)):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
