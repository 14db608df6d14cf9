"""Logging for the command line: sftmix's own lines at INFO, dependencies' messages that do not apply hidden.

Library use (`import sftmix`) configures nothing, as a library should; `sftmix ...` calls `configure_logging()`
first thing. Under `accelerate launch` only the main process (RANK 0) logs at INFO, the others at WARNING, as
`transformers.TrainingArguments.get_process_log_level` does. `SFTMIX_LOG_LEVEL` (DEBUG, INFO, WARNING) overrides.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path


def configure_logging() -> None:
    """Show the `sftmix` loggers' records on stderr from INFO (WARNING off the main process). Idempotent."""
    default = "INFO" if os.environ.get("RANK", "0") in ("", "0") else "WARNING"
    level = logging.getLevelName((os.environ.get("SFTMIX_LOG_LEVEL") or default).strip().upper())
    logger = logging.getLogger("sftmix")
    logger.setLevel(level if isinstance(level, int) else logging.INFO)
    if not any(getattr(handler, "_sftmix", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._sftmix = True
        logger.addHandler(handler)
    # bitsandbytes warns at import that it cannot fetch its AVX512-BF16 CPU kernel from the Hub (also on runs without
    # quantization), a kernel sftmix turns off anyway (sftmix.modeling.disable_bnb_cpu_repacking)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


# Experiment trackers (`report_to: wandb` / `tensorboard`): the reference run of the dynamics pass and the SFTMix run
# are two runs of one group, named `<run_name>-reference` and `<run_name>`.
def group_tracking_runs(args) -> str:
    """Name the run (default: `output_dir`'s folder name) and make it the W&B group of both runs; returns the name."""
    if not getattr(args, "run_name", None) or args.run_name == args.output_dir:
        args.run_name = Path(args.output_dir).name
    os.environ.setdefault("WANDB_RUN_GROUP", args.run_name)
    return args.run_name


def reference_run_name(run_name: str | None) -> str | None:
    """The reference run's name in the trackers."""
    return f"{run_name}-reference" if run_name else None


@contextmanager
def reference_tracking(config):
    """Around the reference run's training: its own TensorBoard folder (when `TENSORBOARD_LOGGING_DIR` puts both
    runs in one) and its own W&B run, finished at the end so that the SFTMix run opens a new one."""
    base = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if base and config.run_name:
        os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.join(base, config.run_name)
    try:
        yield
    finally:
        if base is not None:
            os.environ["TENSORBOARD_LOGGING_DIR"] = base
        finish_tracking_run()


def finish_tracking_run() -> None:
    """Close the current W&B run, if any (transformers' callback reuses an open run instead of starting one)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
