"""The `sftmix` command line. Start-up stays light: heavy libraries load inside the stage that needs them.

    sftmix run      --config recipe.yaml [--key value ...]   dynamics pass, SFTMix training, evaluation
    sftmix dynamics --config recipe.yaml [...]               stage 1 only: the scores file and data map
    sftmix train    --config recipe.yaml [...]               stage 2 only (needs `dynamics_path` or a column)
    sftmix eval     --model PATH [--heldout FILE --medqa FILE ...]   held-out loss, calibration, benchmarks

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
    "eval": "Evaluate a trained model: held-out loss, calibration, healthcare multiple-choice benchmarks.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftmix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="store_true", help="Print the version and exit.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in STAGES.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, add_help=name != "eval")
        if name != "eval":
            sub.add_argument("--config", required=True, help="Recipe YAML (recipes/...).")
    return parser


def main(argv: list[str] | None = None) -> int:
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

    from sftmix import pipeline
    from sftmix.recipe import load_recipe

    recipe = load_recipe(args.config, rest)
    {"run": pipeline.run_all, "dynamics": pipeline.run_dynamics, "train": pipeline.run_train}[args.command](
        recipe
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
