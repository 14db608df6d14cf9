"""Per-checkpoint scores on disk, so that an interrupted pass resumes without rescoring finished checkpoints.

One small parquet file per checkpoint in `<scores stem>_checkpoints/` next to the scores file, written atomically
(temp file + rename). Each file records the key it was made under (data fingerprint, checkpoint, settings); a file
made under another key is ignored and the checkpoint rescored.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from sftmix.dynamics.scoring import CheckpointScores
from sftmix.scores import write_parquet_atomic

logger = logging.getLogger(__name__)

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

    table = pa.table(
        {
            "row_index": scores.row_index,
            "num_tokens": scores.num_tokens,
            "perplexity": scores.perplexity,
            "mean_probability": scores.mean_probability,
        }
    ).replace_schema_metadata({_KEY: _canonical(key).encode("utf-8")})
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
    columns = table.to_pydict()
    return CheckpointScores(
        np.asarray(columns["row_index"], dtype=np.int64),
        np.asarray(columns["num_tokens"], dtype=np.int64),
        np.asarray(columns["perplexity"], dtype=np.float64),
        np.asarray(columns["mean_probability"], dtype=np.float64),
    )
