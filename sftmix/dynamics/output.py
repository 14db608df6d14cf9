"""The pass's outputs: the scores file (with its metadata), the data map and the confidence histogram."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from sftmix.dynamics.config import DynamicsConfig
from sftmix.dynamics.data import report_excluded
from sftmix.dynamics.frame import scores_frame

logger = logging.getLogger(__name__)


def write_outputs(
    args: DynamicsConfig,
    per_checkpoint: list,
    labels: list[str],
    paths: list[str],
    example_ids: list[str],
    excluded_rows: list[int],
    *,
    reference_name: str,
    data_key: dict,
) -> Path:
    """Aggregate the per-checkpoint scores, split, and write everything next to `args.scores_path`."""
    from sftmix import __version__
    from sftmix.dynamics.plots import draw_pictures
    from sftmix.scores import write_scores

    frame, empty_rows = scores_frame(example_ids, per_checkpoint, labels, args.confident_fraction)
    shifted_out = report_excluded(empty_rows, example_ids, "have no trainable token after the causal shift")
    excluded_ids = list(dict.fromkeys([example_ids[r] for r in excluded_rows] + shifted_out))
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
        "excluded_ids": excluded_ids,
        "dataset_fingerprint": data_key["data"],
        "tokenization": {k: v for k, v in data_key.items() if k != "data"},
        "settings": asdict(args),
    }
    path = write_scores(frame, args.scores_path, metadata)
    if args.plots:
        draw_pictures(frame, path)
    logger.info(
        "Dynamics pass: %d examples scored at %d checkpoints (%d confident, %d unconfident, %d excluded) -> %s",
        len(frame),
        len(labels),
        int(frame["confident"].sum()),
        int((~frame["confident"]).sum()),
        len(excluded_rows) + len(empty_rows),
        path,
    )
    return path
