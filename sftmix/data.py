"""Load SFT data from the Hub or local files and bring it to one of SFTTrainer's formats, checked row by row.

Accepted inputs (`dataset_format: auto` detects them from the columns):
- `messages`: [{"role", "content"}, ...] (UltraChat-200K, TRL's conversational format);
- `prompt` / `completion` strings;
- `text`;
- `conversations`: ShareGPT [{"from", "value"}, ...], converted to `messages`;
- `alpaca`: `instruction`, optional `input`, `output` (Alpaca-52K, MedAlpaca), converted to `messages` with
  the instruction and the input (after a blank line) as the user turn and the output as the assistant turn.
Only the format's own columns are kept (plus the confidence column when present), so that a dataset
carrying e.g. both `prompt` and `messages` (UltraChat) is not misread by SFTTrainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("auto", "messages", "prompt_completion", "text", "sharegpt", "alpaca")
ROLES = {"system", "user", "assistant", "tool"}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
BUILTIN_PREFIX = "sftmix/"


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id (e.g. tatsu-lab/alpaca), or a built-in set: 'sftmix/quickstart' (chitchat "
            "conversations + the project's medical QA, installed from PyPI)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_files: list[str] | None = field(
        default=None,
        metadata={"help": "Local data files (.json, .jsonl, .parquet, .csv) used instead of `dataset_name`."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Held-out split for evaluation, if the dataset has one."}
    )
    eval_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Without a test split, hold out this fraction of the training data for evaluation."
        },
    )
    dataset_format: str = field(default="auto", metadata={"help": "Input format.", "choices": list(FORMATS)})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only this many training examples (first rows, after shuffling)."},
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many held-out examples."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the data shuffle and the held-out split."})

    def __post_init__(self):
        if self.dataset_format not in FORMATS:
            raise ValueError(f"`dataset_format` must be one of {FORMATS}, got {self.dataset_format!r}.")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"`eval_fraction` must lie in [0, 1), got {self.eval_fraction}.")

    def check_sources(self) -> None:
        """Cheap checks (before any model loads): something to load, and local files that exist."""
        if not self.dataset_name and not self.dataset_files:
            raise ValueError(
                "No data: set `dataset_name` (Hub id or 'sftmix/quickstart') or `dataset_files`."
            )
        for path in self.dataset_files or []:
            if not Path(path).exists():
                raise FileNotFoundError(
                    f"Data file {path} does not exist (from `dataset_files`). Fix the path."
                )
            if Path(path).suffix not in FILE_BUILDERS:
                raise ValueError(
                    f"Data file {path} has an unsupported extension; use one of {sorted(FILE_BUILDERS)}."
                )


def load_sft_data(args: DataArguments, keep_columns: tuple[str, ...] = ("confident",)):
    """`(train, eval_or_None)` as `datasets.Dataset`s in one of SFTTrainer's formats."""
    import datasets

    args.check_sources()
    if args.dataset_name and args.dataset_name.startswith(BUILTIN_PREFIX):
        splits = _builtin(args.dataset_name)
    elif args.dataset_files:
        suffixes = {Path(p).suffix for p in args.dataset_files}
        if len(suffixes) > 1:
            raise ValueError(
                f"`dataset_files` mixes file types {sorted(suffixes)}; convert them to one type."
            )
        builder = FILE_BUILDERS[suffixes.pop()]
        splits = datasets.load_dataset(builder, data_files={"train": list(args.dataset_files)})
    else:
        splits = _load_hub(args)

    if args.dataset_train_split not in splits:
        raise ValueError(
            f"The dataset has no split {args.dataset_train_split!r} (splits: {list(splits)}); set "
            "`dataset_train_split`."
        )
    train = splits[args.dataset_train_split].shuffle(seed=args.split_seed)
    held_out = splits[args.dataset_test_split] if args.dataset_test_split in splits else None
    if held_out is None and args.eval_fraction > 0:
        parts = train.train_test_split(test_size=args.eval_fraction, seed=args.split_seed)
        train, held_out = parts["train"], parts["test"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if held_out is not None and args.max_eval_samples is not None:
        held_out = held_out.select(range(min(args.max_eval_samples, len(held_out))))
    train = to_sft_format(train, args.dataset_format, keep_columns)
    held_out = None if held_out is None else to_sft_format(held_out, args.dataset_format, keep_columns)
    return train, held_out


def _builtin(name: str):
    if name.rstrip("/") == "sftmix/quickstart":
        from sftmix.quickstart.data import quickstart_datasets

        return quickstart_datasets()
    raise ValueError(f"Unknown built-in dataset {name!r}; the built-in one is 'sftmix/quickstart'.")


def _load_hub(args: DataArguments):
    import datasets

    try:
        return datasets.load_dataset(args.dataset_name, args.dataset_config)
    except Exception as error:  # offline, gated or missing: say what to do instead
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        raise RuntimeError(
            f"Could not load {args.dataset_name!r} from the Hugging Face Hub"
            f"{' (offline mode is on)' if offline else ''}: {error}. Download it where the Hub is reachable and "
            "pass the files with `dataset_files`, or use `dataset_name: sftmix/quickstart`."
        ) from error


def detect_format(columns: list[str]) -> str:
    columns = set(columns)
    if "messages" in columns:
        return "messages"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "conversations" in columns:
        return "sharegpt"
    if {"instruction", "output"} <= columns:
        return "alpaca"
    if "text" in columns:
        return "text"
    raise ValueError(
        f"The dataset is in none of the accepted formats: its columns are {sorted(columns)}. Expected `messages`, "
        "`prompt` + `completion`, `text`, ShareGPT `conversations`, or Alpaca `instruction` / `input` / `output`."
    )


def to_sft_format(dataset, fmt: str = "auto", keep_columns: tuple[str, ...] = ("confident",)):
    """Convert to `messages`, `prompt`/`completion` or `text`, keep only those columns, check every row."""
    fmt = detect_format(dataset.column_names) if fmt == "auto" else fmt
    if fmt == "alpaca":
        dataset = dataset.map(_alpaca_to_messages, desc="Converting Alpaca rows to messages")
        fmt = "messages"
    elif fmt == "sharegpt":
        dataset = dataset.map(_sharegpt_to_messages, desc="Converting ShareGPT rows to messages")
        fmt = "messages"
    columns = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"], "text": ["text"]}[fmt]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"`dataset_format: {fmt}` needs the columns {columns}; the dataset has {dataset.column_names}."
        )
    dataset = dataset.select_columns(columns + [c for c in keep_columns if c in dataset.column_names])
    check = {"messages": check_messages_row, "prompt_completion": check_prompt_row, "text": check_text_row}[
        fmt
    ]
    for index, row in enumerate(dataset.select_columns(columns)):
        problem = check(row)
        if problem:
            raise ValueError(f"Malformed training example at row {index}: {problem}. Fix or drop that row.")
    return dataset


def check_messages_row(row) -> str | None:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list of {'role', 'content'}"
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"message {turn} has role {message.get('role') if isinstance(message, dict) else message!r}; expected one of {sorted(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"message {turn} has no text `content`"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no non-empty assistant message, so nothing to train on"
    return None


def check_prompt_row(row) -> str | None:
    for key in ("prompt", "completion"):
        if not isinstance(row[key], (str, list)):
            return f"`{key}` is {type(row[key]).__name__}, expected text or a list of messages"
    if isinstance(row["completion"], str) and not row["completion"].strip():
        return "empty `completion`, so nothing to train on"
    return None


def check_text_row(row) -> str | None:
    if not isinstance(row["text"], str) or not row["text"].strip():
        return "empty or non-text `text`"
    return None


def _alpaca_to_messages(row):
    instruction = (row.get("instruction") or "").strip()
    extra = (row.get("input") or "").strip()
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": row.get("output") or ""},
        ]
    }


def _sharegpt_to_messages(row):
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    return {
        "messages": [
            {"role": roles.get(t["from"], t["from"]), "content": t["value"]} for t in row["conversations"]
        ]
    }
