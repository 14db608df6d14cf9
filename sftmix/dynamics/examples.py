"""The examples the dynamics pass scores: checks before any work, and the `ROW_INDEX` column that maps each row
SFTTrainer's preparation keeps (`reference.prepare_examples`) back to the raw dataset; rows dropped are excluded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sftmix.dynamics.config import DynamicsConfig

logger = logging.getLogger(__name__)

ROW_INDEX = "sftmix_row_index"


# Checks before any work -------------------------------------------------------------------------------------
def check_inputs(model, train_dataset, args: DynamicsConfig) -> Path:
    """Everything that can be wrong before any work starts; returns the scores path."""
    from datasets import Dataset

    if not isinstance(args, DynamicsConfig):
        raise TypeError(f"`args` must be a DynamicsConfig, got {type(args).__name__}.")
    if not args.scores_path:
        raise ValueError("`scores_path` is not set: say where the dynamics pass writes its scores file.")
    if not isinstance(train_dataset, Dataset):
        raise TypeError(
            "The dynamics pass needs a map-style `datasets.Dataset` (it scores every example); got "
            f"{type(train_dataset).__name__}."
        )
    for position, path in enumerate(args.checkpoints or []):
        if not _loadable(path):
            raise FileNotFoundError(
                f"Checkpoint {path!r} (`checkpoints[{position}]`) does not exist. Give the directory of a saved model "
                "or PEFT adapter (e.g. <output_dir>/checkpoint-500), or leave `checkpoints` unset to train a "
                "reference model."
            )
    if args.reference_model and not _loadable(args.reference_model):
        raise FileNotFoundError(
            f"Reference model {args.reference_model!r} (`reference_model`) is neither a local directory nor a "
            "reachable Hub id. Fix the path, or leave `reference_model` unset to use the target model."
        )
    if model is None and not args.reference_model and not args.checkpoints:
        raise ValueError("No model to score: pass the target model, or set `reference_model` or `checkpoints`.")
    return Path(args.scores_path)


def _loadable(name: str) -> bool:
    """A local path that exists, or a Hub id `from_pretrained` could fetch (`checks.hub_id_loadable`)."""
    from sftmix.checks import hub_id_loadable

    return Path(name).exists() or hub_id_loadable(name)


def resolve_tokenizers(model, processing_class, args: DynamicsConfig):
    """(target tokenizer or None, the tokenizer the scored model reads)."""
    from transformers import AutoTokenizer

    target = processing_class
    if target is None and isinstance(model, str):
        target = AutoTokenizer.from_pretrained(model)
    reference = target
    if args.checkpoints and (Path(args.checkpoints[0]) / "tokenizer_config.json").is_file():
        reference = AutoTokenizer.from_pretrained(args.checkpoints[0])
    elif args.reference_model:
        reference = AutoTokenizer.from_pretrained(args.reference_model)
    if reference is None:
        raise ValueError("No tokenizer: pass `processing_class` (the target's tokenizer).")
    return target, reference


# Rows tracked by index --------------------------------------------------------------------------------------
def with_row_index(dataset):
    """`dataset` plus the `ROW_INDEX` column (0..N-1)."""
    if ROW_INDEX in dataset.column_names:
        raise ValueError(f"The training dataset already has a `{ROW_INDEX}` column; remove it first.")
    return dataset.add_column(ROW_INDEX, np.arange(len(dataset), dtype=np.int64))


def missing_rows(num_rows: int, kept_rows) -> list[int]:
    """Raw rows absent from the prepared dataset (dropped by SFTTrainer: no trainable token after truncation)."""
    return np.setdiff1d(np.arange(num_rows), np.asarray(list(kept_rows), dtype=np.int64)).tolist()


def report_excluded(rows: list[int], example_ids: list[str], reason: str) -> list[str]:
    """Log the excluded rows (count and first ids) and return their example ids, once each, in row order."""
    if not rows:
        return []
    logger.warning(
        "%d training example(s) %s and are left out of the split: %s. They are listed as `excluded_ids` in the "
        "scores file. Raise `max_length` or check the label masking if this is unexpected.",
        len(rows),
        reason,
        preview(rows, example_ids),
    )
    return list(dict.fromkeys(example_ids[r] for r in rows))


def preview(rows, example_ids) -> str:
    """The first five rows with their example ids, then ", ..." if there are more."""
    return ", ".join(f"row {r} ({example_ids[r]})" for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
