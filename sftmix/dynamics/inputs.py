"""What the dynamics pass checks and loads before any work: settings, paths, tokenizers."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sftmix.dynamics.config import DynamicsConfig


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
        raise ValueError(
            "No model to score: pass the target model, or set `reference_model` or `checkpoints`."
        )
    return Path(args.scores_path)


def _loadable(name: str) -> bool:
    """A local path that exists, or a Hub id that can be reached (online, or in the local cache when offline)."""
    if Path(name).exists():
        return True
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name) or name.startswith("."):
        return False
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    return True


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
