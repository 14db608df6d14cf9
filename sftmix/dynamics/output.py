"""What the pass writes: the scores file, the per-checkpoint cache (`<scores stem>_checkpoints/`, one parquet file per
checkpoint holding the key it was made under: another key is rescored), the data map, the histogram, the review."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sftmix.dynamics.config import DynamicsConfig
from sftmix.dynamics.examples import report_excluded
from sftmix.dynamics.scoring import CheckpointScores
from sftmix.dynamics.split import scores_frame, split_confident
from sftmix.scores import write_parquet_atomic, write_scores

logger = logging.getLogger(__name__)


# The scores file --------------------------------------------------------------------------------------------
def write_outputs(
    args, per_checkpoint, labels, paths, example_ids, excluded_rows, *, reference_name, data_key, train_dataset, marks
) -> Path:
    """Aggregate the per-checkpoint `CheckpointScores` (with labels and paths), split, and write everything next to
    `args.scores_path` (a `DynamicsConfig`); `excluded_rows` are rows of the raw `train_dataset`, `marks` its
    `mark_column` by row (or None)."""
    random_seed = args.split_seed if args.split == "random" else None
    frame, empty_rows = scores_frame(
        example_ids, per_checkpoint, labels, args.confident_fraction, random_seed, args.confidence
    )
    shifted_out = report_excluded(empty_rows, example_ids, "have no trainable token after the causal shift")
    excluded_ids = [example_ids[r] for r in excluded_rows] + shifted_out
    path = _write(args, frame, marks, labels, paths, example_ids, excluded_ids, reference_name, data_key)
    if args.plots:
        pictures = picture_paths(path)
        draw_data_map(frame, pictures["data_map"], args.mark_column)
        draw_confidence_histogram(frame, pictures["confidence_histogram"])
    logger.info(
        "Dynamics pass: %d examples scored at %d checkpoints (%d confident, %d unconfident, %d excluded) -> %s",
        len(frame),
        len(labels),
        int(frame["confident"].sum()),
        int((~frame["confident"]).sum()),
        len(excluded_rows) + len(empty_rows),
        path,
    )
    write_review(frame, path, train_dataset, args.review_size, args.mark_column)
    return path


def marks_of(train_dataset, column: str | None):
    """The `mark_column` of the training data as booleans, or None; a clear error for a missing or non-boolean one."""
    if column is None:
        return None
    if column not in train_dataset.column_names:
        raise ValueError(
            f"`dynamics.mark_column: {column}` is not a column of the training data (columns: "
            f"{train_dataset.column_names}). Name a boolean column of your data, or remove the setting."
        )
    values = train_dataset[column]
    bad = next((i for i, v in enumerate(values) if not isinstance(v, (bool, np.bool_))), None)
    if bad is not None:
        raise ValueError(f"`dynamics.mark_column: {column}` must hold booleans; row {bad} holds {values[bad]!r}.")
    return np.asarray(values, dtype=bool)


def write_random_split(
    args: DynamicsConfig, example_ids, kept_rows, excluded_rows, data_key: dict, marks=None
) -> Path:
    """The random-split ablation's scores file (`split: random`): the confident group `scores_frame`'s seeded draw
    would give, with no reference run or scoring; `confidence` is NaN (nothing was scored) and no data map is drawn."""
    import pandas as pd

    ids = [example_ids[r] for r in kept_rows]
    frame = pd.DataFrame(
        {
            "example_id": ids,
            "row_index": np.asarray(kept_rows, dtype=np.int64),
            "confidence": np.full(len(ids), np.nan),
            "confident": split_confident(np.zeros(len(ids)), ids, args.confident_fraction, args.split_seed),
        }
    )
    excluded_ids = [example_ids[r] for r in excluded_rows]
    path = _write(args, frame, marks, [], [], example_ids, excluded_ids, "none (random split)", data_key)
    logger.info(
        "Random split (split_seed %d): %d confident, %d unconfident examples, no reference run -> %s",
        args.split_seed,
        int(frame["confident"].sum()),
        int((~frame["confident"]).sum()),
        path,
    )
    return path


def _write(args, frame, marks, labels, paths, example_ids, excluded_ids, reference_name, data_key) -> Path:
    """The scores file, with the data's `mark_column` (by raw row) as a column and the pass's metadata."""
    from sftmix import __version__

    if args.mark_column is not None and marks is not None:
        frame[args.mark_column] = np.asarray(marks, dtype=bool)[frame["row_index"].to_numpy()]
    metadata = {
        "sftmix_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference_model": reference_name,
        "checkpoints": [{"label": label, "path": path} for label, path in zip(labels, paths, strict=True)],
        "num_checkpoints": len(labels),
        "confident_fraction": args.confident_fraction,
        "num_examples": len(example_ids),
        "num_scored": len(frame),
        "num_confident": int(frame["confident"].sum()),
        "excluded_ids": list(dict.fromkeys(excluded_ids)),
        "dataset_fingerprint": data_key["data"],
        "tokenization": {k: v for k, v in data_key.items() if k != "data"},
        "settings": asdict(args),
    }
    return write_scores(frame, args.scores_path, metadata)


# Per-checkpoint scores cache ------------------------------------------------------------------------------
_KEY = b"sftmix_dynamics_cache"


def cache_dir(scores_path: str | os.PathLike) -> Path:
    scores_path = Path(scores_path)
    return scores_path.with_name(f"{scores_path.stem}_checkpoints")


def cache_file(directory: Path, position: int, label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "checkpoint"
    return directory / f"{position:03d}-{safe}.parquet"


def _canonical(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def write_checkpoint_scores(path: Path, scores: CheckpointScores, key: dict) -> Path:
    import pyarrow as pa

    columns = {f.name: getattr(scores, f.name) for f in fields(scores) if getattr(scores, f.name) is not None}
    table = pa.table(columns).replace_schema_metadata({_KEY: _canonical(key).encode("utf-8")})
    return write_parquet_atomic(table, path)


def read_checkpoint_scores(path: Path, key: dict) -> CheckpointScores | None:
    """The cached scores at `path`, or None when there are none or they were made under another key."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except Exception as error:  # a damaged file is rescored, not fatal
        logger.warning("Ignoring unreadable cached scores %s (%s); rescoring.", path, error)
        return None
    stored = (table.schema.metadata or {}).get(_KEY, b"").decode("utf-8")
    if stored != _canonical(key):
        logger.warning("Cached scores %s were made for other data or settings; rescoring.", path)
        return None
    dtypes = {"row_index": np.int64, "num_tokens": np.int64}
    columns = {n: np.asarray(table[n], dtype=dtypes.get(n, np.float64)) for n in table.column_names}
    return CheckpointScores(**columns)


# Pictures ---------------------------------------------------------------------------------------------------
GROUP_COLOURS = {True: "#1f77b4", False: "#d62728"}
GROUP_NAMES = {True: "confident", False: "unconfident"}


def picture_paths(scores_path: str | Path) -> dict[str, Path]:
    """`data_map.png` and `confidence_histogram.png` next to `scores.parquet` (the default name); for any other
    name the scores file's stem is prefixed (`run1_data_map.png`), so that several files can share a folder."""
    scores_path = Path(scores_path)
    prefix = "" if scores_path.stem == "scores" else f"{scores_path.stem}_"
    names = {"data_map": "data_map.png", "confidence_histogram": "confidence_histogram.png"}
    names.update(review_md="review.md", review_csv="review.csv")
    return {key: scores_path.with_name(prefix + name) for key, name in names.items()}


def response_text(row: dict) -> str:
    """What an example trains to answer: its last assistant turn, its completion, or its text."""
    if row.get("messages"):
        turns = [m.get("content") or "" for m in row["messages"] if m.get("role") == "assistant"]
        return turns[-1] if turns else ""
    completion = row.get("completion")
    if isinstance(completion, list):
        return " ".join(m.get("content") or "" for m in completion)
    return str(completion if completion is not None else row.get("text") or "")


def write_review(frame, scores_path, train_dataset, size: int, mark: str | None = None) -> dict[str, Path] | None:
    """The `size` least confident examples of the scores `frame` as review.md and review.csv next to the scores file
    (Cartography's use for finding mislabelled examples); excerpts follow `error_excerpts` (sftmix.data.excerpt)."""
    from sftmix.data import excerpt

    if size == 0 or not frame["confidence"].notna().any():  # nothing scored: a random split
        return None
    least = frame.nsmallest(size, "confidence")
    mark = mark if mark in frame.columns else None
    review = least[["example_id", "row_index", "confidence", *([mark] if mark else []), "variability"]].assign(
        response=[excerpt(response_text(train_dataset[int(r)])) for r in least["row_index"]]
    )
    paths = picture_paths(scores_path)
    review.to_csv(paths["review_csv"], index=False)
    lines = [
        f"# The {len(review)} least confident training examples",
        "",
        f"Confidence is {measure_name(frame)} over the checkpoints (or epochs) scored, lowest first; "
        "variability is the spread of the response's mean token probability over them. Mislabelled, mismatched and "
        "truncated responses tend to gather here: check these rows of your data.",
        *([f"{int(review[mark].sum())} of these {len(review)} are marked `{mark}` in the data.", ""] if mark else []),
        "",
        f"| # | example id | row | confidence | variability |{f' {mark} |' if mark else ''} response |",
        "|---|---|---|---|---|---|" + ("---|" if mark else ""),
    ]
    for rank, row in enumerate(review.to_dict("records"), start=1):
        text = str(row["response"]).replace("|", "\\|").replace("\n", " ")
        marked = f" {'yes' if row[mark] else ''} |" if mark else ""
        lines.append(
            f"| {rank} | `{row['example_id']}` | {row['row_index']} | {row['confidence']:.4g} | "
            f"{row['variability']:.3g} |{marked} {text} |"
        )
    paths["review_md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("Review list of the %d least confident examples: %s", len(review), paths["review_md"])
    return {"md": paths["review_md"], "csv": paths["review_csv"]}


def measure_name(frame) -> str:
    """What the frame's confidence is: minus the mean response perplexity (the paper's) or minus the mean IFD."""
    ifd = "minus the mean IFD (perplexity with / without the prompt)"
    return ifd if "ifd" in frame else "minus the mean perplexity"


def _spans_decades(confidence) -> bool:
    """Perplexities often have a long tail (confidence = -perplexity <= -1): then a log scale shows the bulk."""
    magnitude = -np.asarray(confidence, dtype=np.float64)
    return magnitude.min() > 0 and magnitude.max() / magnitude.min() > 10


def _figure(**kwargs):
    """A figure drawn with the Agg canvas, outside pyplot: the caller's matplotlib backend is left as it is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(figure)
    return figure


def draw_data_map(frame, path: Path, mark: str | None = None) -> Path:
    """x = variability, y = mean probability (Cartography's axes) and y = the paper's confidence, one point per
    example, coloured by group; the rows of the `mark` column (if any) circled in black."""
    fig = _figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    size = max(2.0, min(20.0, 4000.0 / max(len(frame), 1)))
    layers = [  # (rows, name, style): the two groups, then the marked rows circled
        (frame[frame["confident"] == g], GROUP_NAMES[g], dict(s=size, alpha=0.6, c=GROUP_COLOURS[g], linewidths=0))
        for g in (False, True)
    ]
    if mark in frame.columns:
        circled = dict(s=size * 3, facecolors="none", edgecolors="black", linewidths=0.8)
        layers.append((frame[frame[mark]], mark, circled))
    for ax, column, label in (
        (axes[0], "mean_probability", "mean probability of response tokens"),
        (axes[1], "confidence", f"confidence = {measure_name(frame)}"),
    ):
        for rows, name, style in layers:
            ax.scatter(rows["variability"], rows[column], label=f"{name} ({len(rows)})", **style)
        ax.set_xlabel("variability (std of mean probability over checkpoints)")
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8)
    if _spans_decades(frame["confidence"]):
        axes[1].set_yscale("symlog", linthresh=1.0)
    fig.suptitle(f"Data map: {len(frame)} examples")
    fig.savefig(path, dpi=120)
    return path


def draw_confidence_histogram(frame, path: Path) -> Path:
    """Histogram of confidence by group, with the split threshold."""
    fig = _figure(figsize=(6.5, 4))
    ax = fig.subplots()
    values = frame["confidence"].to_numpy()
    count = min(60, max(10, len(values) // 20))
    if _spans_decades(values):
        bins = -np.geomspace(-values.min(), -values.max(), count + 1)
        ax.set_xscale("symlog", linthresh=1.0)
    else:
        bins = np.histogram_bin_edges(values, bins=count)
    confident = frame["confident"].to_numpy()
    for g in (False, True):
        ax.hist(values[confident == g], bins=bins, alpha=0.7, color=GROUP_COLOURS[g], label=GROUP_NAMES[g])
    threshold = frame.loc[frame["confident"], "confidence"].min()
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"split at {threshold:.3g}")
    ax.set_xlabel(f"confidence = {measure_name(frame)} over checkpoints")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return path
