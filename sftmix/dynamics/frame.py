"""The scores table: per-checkpoint scores of the same rows -> one row per example with the columns of
`sftmix.scores` (confidence, Cartography statistics, group)."""

from __future__ import annotations

import numpy as np

from sftmix.dynamics import aggregate
from sftmix.dynamics.scoring import CheckpointScores


def stack_checkpoints(per_checkpoint: list[CheckpointScores], labels: list[str]):
    """(row_index, num_tokens, perplexities N x C, mean probabilities N x C); all checkpoints must cover the same rows."""
    first = per_checkpoint[0]
    for scores, label in zip(per_checkpoint[1:], labels[1:], strict=True):
        if not np.array_equal(scores.row_index, first.row_index) or not np.array_equal(
            scores.num_tokens, first.num_tokens
        ):
            raise RuntimeError(
                f"Checkpoint {label} was scored on other examples than {labels[0]} (different rows or token counts). "
                "Its cached scores are stale: rerun with `overwrite_cache=True`."
            )
    perplexities = np.stack([s.perplexity for s in per_checkpoint], axis=1)
    probabilities = np.stack([s.mean_probability for s in per_checkpoint], axis=1)
    return first.row_index, first.num_tokens, perplexities, probabilities


def scores_frame(
    example_ids: list[str],
    per_checkpoint: list[CheckpointScores],
    labels: list[str],
    confident_fraction: float,
):
    """The scores DataFrame and the raw rows scored with no trainable token (left out of it)."""
    import pandas as pd

    rows, num_tokens, perplexities, probabilities = stack_checkpoints(per_checkpoint, labels)
    empty = (
        num_tokens == 0
    )  # a trainable token only at position 0 has no context: nothing to score after the shift
    empty_rows = rows[empty].astype(int).tolist()
    rows, num_tokens = rows[~empty], num_tokens[~empty]
    perplexities, probabilities = perplexities[~empty], probabilities[~empty]
    for column, label in enumerate(labels):
        aggregate.check_finite(perplexities[:, column], num_tokens, label)
    ids = [example_ids[r] for r in rows]
    confidence = aggregate.confidence(perplexities)
    if not np.isfinite(confidence).all():  # never write a scores file with a non-finite confidence
        raise FloatingPointError(
            f"{int((~np.isfinite(confidence)).sum())} example(s) have a non-finite confidence; no scores file was "
            "written."
        )
    frame = pd.DataFrame(
        {
            "example_id": ids,
            "row_index": rows.astype(np.int64),
            "num_tokens": num_tokens.astype(np.int64),
            "perplexities": [p.tolist() for p in perplexities],
            "confidence": confidence,
            "mean_probability": aggregate.mean_probability(probabilities),
            "variability": aggregate.variability(probabilities),
            "confident": aggregate.split_confident(confidence, ids, confident_fraction),
        }
    )
    return frame, empty_rows
