"""The reference run: plain NTP training that keeps C evenly spaced checkpoints and scores each one as it is saved.

`CheckpointCallback` decides the checkpoint steps when training starts (from the run's real number of optimizer
steps), makes the Trainer save at exactly those steps, and hands each saved checkpoint to a scoring function while
the training engine is still live (no reload; ZeRO-3, PEFT and quantised models are scored as they train).
A plan file in the output directory records the steps and the settings, so that a later pass can tell whether the
checkpoints on disk are reusable.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

PLAN_FILE = "sftmix_dynamics_plan.json"
CHECKPOINT_PREFIX = "checkpoint-"


def checkpoint_steps(max_steps: int, num_checkpoints: int) -> list[int]:
    """C optimizer steps evenly spaced over a run of `max_steps`, the last at its end: round(k x S / C), k = 1..C."""
    if max_steps < num_checkpoints:
        raise ValueError(
            f"The reference run has {max_steps} optimizer step(s), fewer than `num_checkpoints={num_checkpoints}`: "
            "lower `num_checkpoints`, or lengthen the run (`reference_num_train_epochs`, `reference_max_steps`, a "
            "smaller batch)."
        )
    return [int(k * max_steps / num_checkpoints + 0.5) for k in range(1, num_checkpoints + 1)]


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def is_complete(path: Path) -> bool:
    """The Trainer writes `trainer_state.json` last, after the weights."""
    return (path / "trainer_state.json").is_file()


def is_resumable(path: Path) -> bool:
    """Holds the optimizer state too (`save_only_model=False`), so training can continue from it."""
    return (path / "optimizer.pt").is_file() or any(path.glob("global_step*"))


def read_plan(output_dir: str | os.PathLike) -> dict | None:
    path = Path(output_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_plan(output_dir: str | os.PathLike, plan: dict) -> None:
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=PLAN_FILE + ".", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(plan, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, directory / PLAN_FILE)


def reusable_checkpoints(output_dir: str | os.PathLike, key: dict) -> list[Path] | None:
    """The planned checkpoints of an earlier run with the same settings, if all of them are complete on disk."""
    plan = read_plan(output_dir)
    if plan is None or plan.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    paths = [checkpoint_dir(output_dir, step) for step in plan["steps"]]
    return paths if all(is_complete(p) for p in paths) else None


def resume_point(output_dir: str | os.PathLike, key: dict, is_cached: Callable[[int], bool]) -> str | None:
    """The latest planned checkpoint of an interrupted run with the same settings that training can resume from,
    provided every planned checkpoint up to it is already scored (those steps will not run again)."""
    plan = read_plan(output_dir)
    if plan is None or plan.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    best = None
    for step in plan["steps"]:
        path = checkpoint_dir(output_dir, step)
        if not (is_complete(path) and is_cached(step)):
            break
        if is_resumable(path):
            best = str(path)
    return best


class CheckpointCallback(TrainerCallback):
    """Save at C evenly spaced steps and call `on_checkpoint(step, path)` on every process after each save."""

    def __init__(
        self, num_checkpoints: int, key: dict, on_checkpoint: Callable[[int, Path], None], is_main: bool
    ):
        self.num_checkpoints = num_checkpoints
        self.key = key
        self.on_checkpoint = on_checkpoint
        self.is_main = is_main
        self.steps: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = checkpoint_steps(state.max_steps, self.num_checkpoints)
        if self.is_main:
            write_plan(args.output_dir, {"steps": self.steps, "max_steps": state.max_steps, "key": self.key})
        logger.info("Reference run: %d steps, scoring checkpoints at steps %s", state.max_steps, self.steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            self.on_checkpoint(state.global_step, checkpoint_dir(args.output_dir, state.global_step))
