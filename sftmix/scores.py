"""The scores file: where the dynamics pass (stage 1) meets the SFTMix trainer (stage 2).

One parquet file, one row per training example, joined to the training data by a keyed hash of its content; its
columns, metadata and the privacy of the ids are described in docs/dynamics.md ("The scores file").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCORES_METADATA_KEY = b"sftmix"
REQUIRED_COLUMNS = ("example_id", "confidence", "confident")
ID_KEY_DOMAIN = b"sftmix example_id v2\n"

# The dynamics pass's folder inside `output_dir`: transformers' `push_to_hub` (and its pushes at each save) skip
# `_*`, so the reference run's checkpoints and the scores stay off the Hub without a filter of sftmix's own
DYNAMICS_DIR = "_dynamics"
# The fields that define what a model is trained on, in every format SFTTrainer accepts.
CONTENT_FIELDS = ("text", "messages", "prompt", "completion", "conversations", "input_ids", "labels", "tools")


def default_scores_path(output_dir: str | os.PathLike, scores_path: str | None = None) -> Path:
    """Where a run's dynamics pass (or `training_dynamics`) writes its scores file: `scores_path` (the dynamics
    settings') if set, else <output_dir>/_dynamics/scores.parquet."""
    return Path(scores_path) if scores_path else Path(output_dir, DYNAMICS_DIR, "scores.parquet")


def content_digest(row: dict[str, Any]) -> bytes:
    """SHA-256 of an example's training content (the fields of `CONTENT_FIELDS` it has)."""
    content = {key: row[key] for key in CONTENT_FIELDS if key in row and row[key] is not None}
    if not content:
        raise ValueError(
            f"Cannot derive an example id from a row with columns {sorted(row)}: expected at least one of "
            f"{list(CONTENT_FIELDS)}. Convert the dataset to one of SFTTrainer's formats first."
        )
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(blob.encode("utf-8")).digest()


def dataset_id_key(digests) -> bytes:
    """The HMAC key of a dataset's ids: SHA-256 over its rows' sorted content digests (order-independent)."""
    hasher = hashlib.sha256(ID_KEY_DOMAIN)
    for digest in sorted(digests):
        hasher.update(digest)
    return hasher.digest()


def example_id(row: dict[str, Any], key: bytes | None = None) -> str:
    """The id of `row` in the dataset whose id key is `key` (`dataset_id_key`; by default, of `row` alone)."""
    digest = content_digest(row)
    if key is None:
        key = dataset_id_key([digest])
    return hmac.new(key, digest, hashlib.sha256).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Cannot hash a value of type {type(value).__name__} into an example id")


def dataset_example_ids(dataset) -> list[str]:
    """Example ids for every row of a `datasets.Dataset` (or a list of rows), in order, keyed on the whole dataset."""
    if isinstance(dataset, list):
        rows = dataset
    else:
        columns = [c for c in CONTENT_FIELDS if c in dataset.column_names]
        if not columns:
            raise ValueError(
                f"The dataset has columns {dataset.column_names} and none of {list(CONTENT_FIELDS)}; "
                "no example id can be derived from it."
            )
        rows = dataset.select_columns(columns)
    digests = [content_digest(row) for row in rows]
    key = dataset_id_key(digests)
    return [hmac.new(key, digest, hashlib.sha256).hexdigest()[:32] for digest in digests]


def write_scores(frame, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Write `frame` (a pandas DataFrame) and `metadata` to `path`, atomically (temp file + rename)."""
    import pyarrow as pa

    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"A scores frame needs the columns {missing}")
    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema_metadata = dict(table.schema.metadata or {})
    schema_metadata[SCORES_METADATA_KEY] = json.dumps(metadata, default=str).encode("utf-8")
    table = table.replace_schema_metadata(schema_metadata)
    return write_parquet_atomic(table, path)


def write_parquet_atomic(table, path: Path) -> Path:
    """Write a pyarrow table to a temporary file beside `path`, then rename: never a half-written file."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_scores(path: str | os.PathLike):
    """Read a scores file: returns `(frame, metadata)`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Scores file {path} does not exist. Run `sftmix dynamics` (or `sftmix.compute_dynamics`) first, "
            "or point `dynamics_path` at the file it wrote."
        )
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(SCORES_METADATA_KEY)
    metadata = json.loads(raw) if raw else {}
    frame = table.to_pandas()
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} is not an sftmix scores file: it lacks the columns {missing} (has {list(frame.columns)})."
        )
    if str(frame["confident"].dtype) != "bool":
        raise ValueError(
            f"The `confident` column of the scores file {path} has type {frame['confident'].dtype} "
            f"({table.schema.field('confident').type} in parquet); it must be boolean (True = confident). "
            "Rewrite it as booleans (e.g. `frame['confident'] = frame['confident'] == 'True'`) or rerun "
            "`sftmix dynamics`."
        )
    return frame, metadata


def attach_confidence(dataset, path: str | os.PathLike, column: str = "confident", drop_fraction: float = 0.0):
    """Add the boolean `column` to `dataset` from the scores file at `path`, joined by example id.

    Rows the dynamics pass excluded (no trainable token) are dropped here, since SFTTrainer would drop them too.
    Any other row without a score is an error: the file was made for other data. With `drop_fraction`, the
    floor(fraction x scored) least confident examples are dropped too (data selection by the same scores).
    """
    frame, metadata = read_scores(path)
    groups = dict(zip(frame["example_id"], frame["confident"], strict=True))
    excluded = set(metadata.get("excluded_ids", []))
    ids = dataset_example_ids(dataset)
    missing = [i for i, eid in enumerate(ids) if eid not in groups and eid not in excluded]
    if missing:
        preview = ", ".join(str(i) for i in missing[:5])
        raise ValueError(
            f"The scores file {path} does not cover the training dataset: {len(missing)} of {len(ids)} examples "
            f"have no score (rows {preview}{', ...' if len(missing) > 5 else ''}). It was made for other data "
            f"(fingerprint {metadata.get('dataset_fingerprint', 'unknown')}); ids are keyed on the whole dataset, "
            "so adding, removing or editing rows after the dynamics pass also has this effect. Rerun "
            "`sftmix dynamics` on this dataset, or train on the data it was made for."
        )
    dropped = set()
    if drop_fraction > 0:
        ranked = frame.sort_values(["confidence", "example_id"], kind="stable")["example_id"]
        dropped = set(ranked.iloc[: math.floor(drop_fraction * len(frame) + 1e-9)])
        logger.info(
            "Dropping the %d least confident of %d scored examples (`drop_least_confident: %s`).",
            len(dropped),
            len(frame),
            drop_fraction,
        )
    keep = [i for i, eid in enumerate(ids) if eid in groups and eid not in dropped]
    if len(keep) < len(ids):
        dataset = dataset.select(keep)
        ids = [ids[i] for i in keep]
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    return dataset.add_column(column, [bool(groups[eid]) for eid in ids])
