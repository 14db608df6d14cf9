"""The split: per-checkpoint scores (numpy, one row per example, one column per checkpoint) -> confidence,
Cartography's statistics and the confident / unconfident groups, as the scores table of `sftmix.scores`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sftmix.dynamics.scoring import CheckpointScores


def confidence(perplexities: np.ndarray) -> np.ndarray:
    """Minus the mean over checkpoints (higher = more confident): of the response perplexity, the paper's Conf(Y|X),
    or of the IFD (`confidence: ifd`)."""
    return -np.asarray(perplexities, dtype=np.float64).mean(axis=1)


def check_finite(perplexity: np.ndarray, num_tokens: np.ndarray, checkpoint: str) -> None:
    """A FloatingPointError naming `checkpoint` when any scored example (one with a trainable token) has a
    non-finite perplexity: its confidence would be NaN or infinite and the split meaningless."""
    scored = np.asarray(num_tokens) > 0
    bad = int((~np.isfinite(np.asarray(perplexity, dtype=np.float64)) & scored).sum())
    if bad:
        raise FloatingPointError(
            f"Checkpoint {checkpoint} gives a non-finite perplexity (NaN or inf) for {bad} of {int(scored.sum())} "
            "scored examples: the reference run diverged. No scores file was written. Lower the reference run's "
            "`learning_rate` (or raise `warmup_steps`, set `max_grad_norm`), check the data, and run again."
        )


def mean_probability(probabilities: np.ndarray) -> np.ndarray:
    """Cartography's confidence: the mean over checkpoints of the mean response-token probability."""
    return np.asarray(probabilities, dtype=np.float64).mean(axis=1)


def variability(probabilities: np.ndarray) -> np.ndarray:
    """Cartography's variability: the (population) std over checkpoints of the mean response-token probability."""
    return np.asarray(probabilities, dtype=np.float64).std(axis=1)


def num_confident(num_examples: int, fraction: float) -> int:
    """Size of the confident group: floor(fraction x N), so it never exceeds the requested fraction."""
    return math.floor(fraction * num_examples + 1e-9)


def split_confident(
    scores: np.ndarray, example_ids: Sequence[str], fraction: float, random_seed: int | None = None
) -> np.ndarray:
    """True for the top `fraction` of distinct example ids by (mean) score, ties broken by id, so that identical
    examples share a group and row order does not matter; with `random_seed`, a random group of that size."""
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(example_ids, dtype=object)
    if scores.shape != ids.shape:
        raise ValueError(f"{scores.shape[0]} scores for {ids.shape[0]} example ids")
    unique_ids, inverse = np.unique(ids, return_inverse=True)  # sorted ids: the tie-break order
    unique_scores = np.bincount(inverse, weights=scores) / np.bincount(inverse)
    check_splittable(len(unique_ids), fraction)
    # Stable sort of ids (already ascending) by descending score: equal scores keep id order
    ranking = np.argsort(-unique_scores, kind="stable")
    if random_seed is not None:
        ranking = np.random.default_rng(random_seed).permutation(len(unique_ids))
    confident_unique = np.zeros(len(unique_ids), dtype=bool)
    confident_unique[ranking[: num_confident(len(unique_ids), fraction)]] = True
    return confident_unique[inverse]


def check_splittable(num_examples: int, fraction: float) -> None:
    """A clear error when `num_examples` scored examples cannot give two non-empty groups."""
    if num_examples < 2:
        raise ValueError(
            f"Only {num_examples} distinct example(s) could be scored: SFTMix needs at least 2 to split into a "
            "confident and an unconfident subset. Use more training data (or a larger `max_length` if examples "
            "were excluded for having no trainable token)."
        )
    k = num_confident(num_examples, fraction)
    if k == 0 or k == num_examples:
        empty = "confident" if k == 0 else "unconfident"
        raise ValueError(
            f"`confident_fraction={fraction}` of {num_examples} scored examples leaves the {empty} group empty "
            f"(confident group size floor({fraction} x {num_examples}) = {k}). Use more data or a fraction closer "
            "to 0.5."
        )


# The scores table -------------------------------------------------------------------------------------------
def scores_frame(
    example_ids: list[str],
    per_checkpoint: list[CheckpointScores],
    labels: list[str],
    confident_fraction: float,
    random_seed: int | None = None,
    measure: str = "perplexity",
):
    """The scores DataFrame and the raw rows scored with no trainable token (left out of it); `measure` is
    `DynamicsConfig.confidence` ('ifd' adds the columns `ifds` and `ifd`, and ranks by IFD)."""
    import pandas as pd

    first = per_checkpoint[0]  # all checkpoints must cover the same rows
    for scores, label in zip(per_checkpoint[1:], labels[1:], strict=True):
        if not all(np.array_equal(getattr(scores, n), getattr(first, n)) for n in ("row_index", "num_tokens")):
            raise RuntimeError(
                f"Checkpoint {label} was scored on other examples than {labels[0]} (different rows or token counts). "
                "Its cached scores are stale: rerun with `overwrite_cache=True`."
            )
    # a trainable token only at position 0 has no context: nothing to score after the shift
    empty = first.num_tokens == 0
    empty_rows = first.row_index[empty].astype(int).tolist()
    rows, num_tokens = first.row_index[~empty], first.num_tokens[~empty]

    def stacked(name: str, what: str = ""):  # N x C, each checkpoint's column checked finite
        values = np.stack([getattr(s, name) for s in per_checkpoint], axis=1)[~empty]
        for column, label in enumerate(labels):
            check_finite(values[:, column], num_tokens, label + what)
        return values

    perplexities = stacked("perplexity")
    probabilities = np.stack([s.mean_probability for s in per_checkpoint], axis=1)[~empty]
    ids = [example_ids[r] for r in rows]
    # Cherry LLM's IFD per checkpoint: perplexity given the prompt / perplexity alone
    ifds = perplexities / stacked("alone_perplexity", " (the responses alone)") if measure == "ifd" else None
    example_confidence = confidence(perplexities if ifds is None else ifds)
    if not np.isfinite(example_confidence).all():  # never write a scores file with a non-finite confidence
        raise FloatingPointError(
            f"{int((~np.isfinite(example_confidence)).sum())} example(s) have a non-finite confidence; no scores file was "
            "written."
        )
    frame = pd.DataFrame(
        {
            "example_id": ids,
            "row_index": rows.astype(np.int64),
            "num_tokens": num_tokens.astype(np.int64),
            "perplexities": [p.tolist() for p in perplexities],
            "confidence": example_confidence,
            "mean_probability": mean_probability(probabilities),
            "variability": variability(probabilities),
            "confident": split_confident(example_confidence, ids, confident_fraction, random_seed),
        }
    )
    if ifds is not None:
        frame.insert(4, "ifds", [p.tolist() for p in ifds])
        frame.insert(5, "ifd", ifds.mean(axis=1))
    return frame, empty_rows
