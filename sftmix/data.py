"""Load SFT data from the Hub or local files into one of SFTTrainer's formats, checked row by row.

Accepted inputs (`dataset_format: auto` detects them from the columns): `messages` (TRL's conversational format),
`prompt` / `completion`, `text`, ShareGPT `conversations` and Alpaca `instruction` / `input` / `output` (the last
two converted to `messages`, the input after a blank line in the user turn). Only the format's own columns are
kept (plus the confidence column), so that e.g. UltraChat's `prompt` next to `messages` is not misread.

Every row is checked before shuffling, and a bad row is named where a person finds it: `FILE, line N` (JSON lines,
1-based), `FILE, item N` (JSON array), `FILE, row N` (parquet, arrow, CSV; 0-based), `row N of split S` (Hub and
built-in data); all together (`DataError.problems`). Local files are read once, by `datasets`; only when that read
fails are they scanned line by line for the cause. Errors quote at most `EXCERPT_CHARS` characters of a row, and
none when `error_excerpts` is off (patient texts stay out of logs).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("auto", "messages", "prompt_completion", "text", "sharegpt", "alpaca")
ROLES = {"system", "user", "assistant", "tool"}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
BUILTIN_PREFIX = "sftmix/"
EXCERPT_CHARS = 80
NO_DATA = "No data: set `dataset_name` (Hub id or 'sftmix/quickstart') or `dataset_files`."
MAX_LISTED = 20  # problems listed in one message; `DataError.problems` keeps them all
_excerpts_enabled = True


class DataError(ValueError):
    """Everything wrong with a dataset, one problem per entry of `problems` (file, line and fix)."""

    def __init__(self, summary: str, problems: list[str]):
        self.problems = list(problems)
        listed = "\n".join(f"  - {p}" for p in self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        super().__init__(f"{summary}\n{listed}" + (f"\n  ... and {more} more" if more > 0 else ""))


def set_error_excerpts(enabled: bool) -> None:
    """Whether `excerpt` quotes rows, process-wide: the recipe's `error_excerpts`, set where its data are read."""
    global _excerpts_enabled
    _excerpts_enabled = bool(enabled)


def excerpt(value) -> str:
    """A short quote of a row or value for an error message: at most `EXCERPT_CHARS` characters, one line."""
    if not _excerpts_enabled:
        return "<excerpt hidden: error_excerpts is off>"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return repr(text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "...")


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id (e.g. tatsu-lab/alpaca), or a built-in set: 'sftmix/quickstart' (chitchat "
            "conversations + the project's medical QA, installed from PyPI), 'sftmix/quickstart-noisy' (the same "
            "with 30 percent of the training responses swapped between conversations, marked in a `corrupted` column)."
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
        metadata={"help": "Without a test split, hold out this fraction of the training data for evaluation."},
    )
    dataset_format: str = field(default="auto", metadata={"help": "Input format.", "choices": list(FORMATS)})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only this many training examples (first rows, after shuffling)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many held-out examples."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the data shuffle and the held-out split."})
    error_excerpts: bool = field(
        default=True,
        metadata={
            "help": f"Quote a short excerpt (at most {EXCERPT_CHARS} characters) of a bad row in error messages. "
            "Set false for private data (e.g. patient records): errors then name only the file and line."
        },
    )

    def __post_init__(self):
        if self.dataset_format not in FORMATS:
            raise ValueError(f"`dataset_format` must be one of {FORMATS}, got {self.dataset_format!r}.")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"`eval_fraction` must lie in [0, 1), got {self.eval_fraction}.")

    def source_problems(self) -> list[str]:
        """What stops the data from loading, found before anything loads: no source, missing or mixed files."""
        files = self.dataset_files or []
        problems = [] if self.dataset_name or files else [NO_DATA]
        for path in files:
            if not Path(path).is_file():
                problems.append(f"`dataset_files`: {path} does not exist (cwd {os.getcwd()}). Fix the path.")
            elif Path(path).suffix not in FILE_BUILDERS:
                problems.append(
                    f"`dataset_files`: {path} has an unsupported extension; use one of {sorted(FILE_BUILDERS)}."
                )
        suffixes = sorted({Path(p).suffix for p in files})
        if len(suffixes) > 1:
            problems.append(f"`dataset_files` mixes file types {suffixes}; convert them to one type.")
        return problems

    def check_sources(self) -> None:
        """Raise `DataError` listing `source_problems`, if any."""
        problems = self.source_problems()
        if problems:
            raise DataError("The data cannot be loaded:", problems)


def load_sft_data(args: DataArguments, keep_columns: tuple[str, ...] = ("confident",)):
    """`(train, eval_or_None)` in one of SFTTrainer's formats, every row checked before shuffling."""
    args.check_sources()
    set_error_excerpts(args.error_excerpts)
    origins = None
    if args.dataset_name and args.dataset_name.startswith(BUILTIN_PREFIX):
        splits = _builtin(args.dataset_name)
    elif args.dataset_files:
        splits = {"train": read_files(args.dataset_files, args.dataset_format)}
        origins = functools.partial(row_origins, args.dataset_files)
    else:
        splits = _load_hub(args)

    if args.dataset_train_split not in splits:
        raise ValueError(
            f"The dataset has no split {args.dataset_train_split!r} (splits: {list(splits)}); set "
            "`dataset_train_split`."
        )
    convert = functools.partial(to_sft_format, fmt=args.dataset_format, keep_columns=keep_columns)
    train = convert(splits[args.dataset_train_split], origins=origins, split=args.dataset_train_split)
    if len(train) == 0:
        raise DataError("No training data.", [f"split {args.dataset_train_split!r} has no rows"])
    train = train.shuffle(seed=args.split_seed)
    held_out = None
    if args.dataset_test_split in splits:
        held_out = convert(splits[args.dataset_test_split], split=args.dataset_test_split)
    elif args.eval_fraction > 0:
        parts = train.train_test_split(test_size=args.eval_fraction, seed=args.split_seed)
        train, held_out = parts["train"], parts["test"]
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
    if held_out is not None and args.max_eval_samples is not None:
        held_out = held_out.take(args.max_eval_samples)
    if held_out is not None and len(held_out) == 0:
        source = (
            f"split {args.dataset_test_split!r}"
            if args.dataset_test_split in splits
            else f"`eval_fraction: {args.eval_fraction}`"
        )
        raise DataError(
            "The held-out split is empty.",
            [
                f"the held-out {source} (with `max_eval_samples: {args.max_eval_samples}`) has no rows: give it "
                "rows, or unset `dataset_test_split` / `eval_fraction` to train without evaluation"
            ],
        )
    if len(train) == 0:
        raise DataError(
            "No training data left.",
            [f"`max_train_samples: {args.max_train_samples}` leaves no training row; raise it or unset it"],
        )
    return train, held_out


def read_files(paths, fmt: str = "auto"):
    """The local files as one `datasets.Dataset`; if `datasets` cannot read them, `DataError` names every problem."""
    import datasets

    empty = [f"{path}: holds no rows" for path in paths if not _holds_rows(path)]
    if empty:  # `datasets` reads an empty file among others without a word
        raise DataError(f"The data files have {len(empty)} problem(s):", empty)
    try:
        return datasets.load_dataset(
            FILE_BUILDERS[Path(paths[0]).suffix], data_files={"train": list(paths)}, split="train"
        )
    except Exception:
        scans = [_scan_file(str(path)) for path in paths]
        problems = [problem for _, file_problems in scans for problem in file_problems]
        rows = [(origin, row) for file_rows, _ in scans for origin, row in file_rows if row is not None]
        if rows:
            try:
                row_fmt = detect_format({key for _, row in rows for key in row}) if fmt == "auto" else fmt
            except ValueError as error:
                problems.append(str(error))
            else:
                problems += [_row_problem(o, p, row) for o, row in rows if (p := check_row(row, row_fmt))]
        if not problems:
            raise
    raise DataError(f"The data files have {len(problems)} problem(s):", problems) from None


def row_origins(paths) -> list[str]:
    """Where each row of the local data files is (`FILE, line N`, ...: the module docstring), in `datasets`' order."""
    return [origin for path in paths for origin, _ in _scan_file(str(path))[0]]


def _scan_file(path: str) -> tuple[list[tuple[str, dict | None]], list[str]]:
    """`([(origin, JSON row or None)], problems)`: where each row of one data file is and a problem per line (or
    file) that cannot be read."""
    suffix = Path(path).suffix
    if suffix in (".parquet", ".arrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if suffix == ".parquet":
                count = pq.ParquetFile(path).metadata.num_rows
            else:
                with pa.memory_map(path) as source:
                    count = pa.ipc.open_stream(source).read_all().num_rows
        except Exception as error:
            kind = "parquet file" if suffix == ".parquet" else "arrow stream"
            return [], [f"{path}: not a readable {kind} ({error})"]
        return [(f"{path}, row {i}", None) for i in range(count)], _empty(path, count)
    lines, problems = _decode_lines(path)
    text = "\n".join(line or "" for line in lines)
    if suffix == ".csv":
        reader = csv.reader(io.StringIO(text))
        next(reader, None)  # the header
        rows = [] if problems else [(f"{path}, row {i} (line {reader.line_num})", None) for i, _ in enumerate(reader)]
        return rows, problems or _empty(path, len(rows))
    document = None
    if suffix == ".json" and text.lstrip()[:1] in ("[", "{") and not problems:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            if text.lstrip()[:1] == "[":
                return [], [f"{path}, line {error.lineno}: not valid JSON ({error.msg}). Fix the file"]
    if isinstance(document, dict):  # one object: one row, as `datasets` reads it
        return [(f"{path}, line 1", document)], []
    items = [(f"{path}, item {i}", value) for i, value in enumerate(document or [])]
    for number, line in enumerate([] if isinstance(document, list) else lines, start=1):
        if line and line.strip():
            try:
                items.append((f"{path}, line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                problems.append(
                    f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}). Expected one "
                    "JSON object per line"
                )
    rows = [(origin, value) for origin, value in items if isinstance(value, dict)]
    problems += [f"{o}: a JSON {type(v).__name__}, not an object (a row)" for o, v in items if not isinstance(v, dict)]
    problems.sort(key=lambda problem: int(re.match(r", (?:line|item) (\d+)", problem[len(path) :])[1]))
    return rows, problems or _empty(path, len(rows))


def _decode_lines(path: str) -> tuple[list[str | None], list[str]]:
    """The file's lines as text; an undecodable line is None and a problem naming its line and byte."""
    lines, problems = [], []
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            lines.append(None)
            problems.append(
                f"{path}, line {number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}). "
                "Re-save the file as UTF-8"
            )
    return lines, problems


def _holds_rows(path) -> bool:
    """False for a data file with nothing to read: blank text, `[]`, a CSV header alone, a parquet of no rows
    (reads no further than its first non-blank bytes)."""
    suffix = Path(path).suffix
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows > 0
    if suffix not in (".json", ".jsonl", ".csv"):
        return True
    with open(path, "rb") as file:
        if suffix == ".csv":
            file.readline()
        while chunk := file.read(1 << 16):
            if chunk.strip():
                return chunk.strip() != b"[]"
    return False


def _empty(path: str, count: int) -> list[str]:
    return [] if count else [f"{path}: holds no rows"]


def _builtin(name: str):
    from sftmix.quickstart.data import NOISE, quickstart_datasets

    noise = {"sftmix/quickstart": 0.0, "sftmix/quickstart-noisy": NOISE}.get(name.rstrip("/"))
    if noise is None:
        raise ValueError(
            f"Unknown built-in dataset {name!r}; the built-in ones are 'sftmix/quickstart' and "
            "'sftmix/quickstart-noisy'."
        )
    return quickstart_datasets(noise=noise)


def _load_hub(args: DataArguments):
    import datasets

    try:
        return datasets.load_dataset(args.dataset_name, args.dataset_config)
    except Exception as error:  # offline, gated or missing: say what to do instead
        from sftmix.checks import offline

        raise RuntimeError(
            f"Could not load {args.dataset_name!r} from the Hugging Face Hub"
            f"{' (offline mode is on)' if offline('HF_DATASETS_OFFLINE', 'HF_HUB_OFFLINE') else ''}: {error}. Download it where the Hub is reachable and "
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


def to_sft_format(
    dataset,
    fmt: str = "auto",
    keep_columns: tuple[str, ...] = ("confident",),
    *,
    origins=None,
    split: str | None = None,
):
    """Convert to `messages`, `prompt`/`completion` or `text`, keep only those columns, check every row.

    `origins` (a list, or a function giving it, called only for a bad row) names row i in error messages (e.g.
    `FILE, line N`); by default `row i` (of `split`). All malformed rows are reported together in one `DataError`.
    """
    fmt = detect_format(dataset.column_names) if fmt == "auto" else fmt
    if fmt in CONVERTERS:
        dataset = dataset.map(CONVERTERS[fmt], desc=f"Converting {fmt} rows to messages")
        fmt = "messages"
    columns = COLUMNS[fmt]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"`dataset_format: {fmt}` needs the columns {columns}; the dataset has {dataset.column_names}."
        )
    dataset = dataset.select_columns(columns + [c for c in keep_columns if c in dataset.column_names])
    bad = [(i, row, p) for i, row in enumerate(dataset.select_columns(columns)) if (p := check_row(row, fmt))]
    if bad:
        origins = origins() if callable(origins) else origins
        if not origins or len(origins) != len(dataset):  # none, or the loader read the files differently
            origins = [f"row {i}" + (f" of split {split!r}" if split else "") for i in range(len(dataset))]
        problems = [_row_problem(origins[i], p, row) for i, row, p in bad]
        raise DataError(f"{len(problems)} malformed training example(s):", problems)
    return dataset


def _row_problem(where: str, problem: str, row) -> str:
    return f"{where}: {problem} (row: {excerpt(row)}). Fix or drop that row"


def check_row(row: dict, fmt: str) -> str | None:
    """What is wrong with one row of format `fmt` (any accepted format, before conversion), or None."""
    if fmt in CONVERTERS:
        row, fmt = CONVERTERS[fmt](row), "messages"
    return ROW_CHECKS[fmt]({c: row.get(c) for c in COLUMNS[fmt]})


def check_messages_row(row) -> str | None:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list of {'role', 'content'}"
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = repr(message.get("role")) if isinstance(message, dict) else excerpt(message)
            return f"message {turn} has role {role}; expected one of {sorted(ROLES)}"
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
    return None if isinstance(row["text"], str) and row["text"].strip() else "empty or non-text `text`"


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _alpaca_to_messages(row):
    instruction = _text(row.get("instruction")).strip()
    extra = _text(row.get("input")).strip()
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(row.get("output"))},
        ]
    }


# ShareGPT role names as chat templates name them (user, assistant and system are the same in both)
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def _sharegpt_to_messages(row):
    """TRL's own ShareGPT conversion (`maybe_convert_to_chatml`: from/value -> role/content), then ShareGPT's role
    names (human, gpt) as chat templates name them."""
    from trl import maybe_convert_to_chatml

    turns = row.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return {"messages": []}  # reported by the row check
    messages = maybe_convert_to_chatml({"conversations": [dict(t) for t in turns]})["messages"]
    return {"messages": [{**m, "role": SHAREGPT_ROLES.get(m.get("role"), m.get("role"))} for m in messages]}


CONVERTERS = {"alpaca": _alpaca_to_messages, "sharegpt": _sharegpt_to_messages}
COLUMNS = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"], "text": ["text"]}
ROW_CHECKS = {"messages": check_messages_row, "prompt_completion": check_prompt_row, "text": check_text_row}
