"""Confidence from the training forward itself (`SFTMixConfig.training_dynamics`, recipe `dynamics.mode: training`;
beyond the paper): the `Recorder` keeps each example's response NLL every time it is trained on, gathered over the
processes, and decides the split from it; runs of two epochs or more split by epoch (`epoch_split`), shorter ones
label each micro-batch against the recent median (`threshold`). The rules: docs/dynamics.md ("Training mode").
"""

from __future__ import annotations

import math
from functools import reduce
from pathlib import Path

import numpy as np

from sftmix.dynamics.scoring import CheckpointScores
from sftmix.dynamics.split import confidence, split_confident

FIELDS = ("epoch", "step", "row", "num_tokens", "nll_sum", "probability_sum")
RECORDS_FILE = "sftmix_training_dynamics.npz"


def warmup_steps(max_steps: int, ratio: float) -> int:
    """Optimizer steps of plain NTP before the first in-batch labels (at least one, at most the whole run)."""
    return min(max(1, math.ceil(ratio * max_steps)), max_steps)


def epoch_wise(num_train_epochs: float) -> bool:
    """Whether the warm-up is the first epoch and later epochs use the pair sampler (runs of two epochs or more)."""
    return num_train_epochs >= 2


class Recorder:
    """The table of training-time records (rows of `FIELDS`)."""

    def __init__(self, example_ids: list[str]):
        self.example_ids = example_ids  # by raw row of the train dataset: the split's tie-break and grouping
        self.reset()

    def reset(self) -> None:
        self._parts, self._splits, self._thresholds = [], {}, {}

    # The table -----------------------------------------------------------------------------------------------
    @property
    def records(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros((0, len(FIELDS)))

    def add(self, records: np.ndarray) -> None:
        """One micro-batch's records (every process's): kept as its own part, so that adding costs no copy."""
        self._parts.append(np.asarray(records, dtype=np.float64).reshape(-1, len(FIELDS)))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory, RECORDS_FILE)
        partial = path.with_name(f".{path.name}.partial.npz")
        np.savez(partial, records=self.records)
        partial.replace(path)
        return path

    def load(self, checkpoint: str | Path) -> None:
        path = Path(checkpoint, RECORDS_FILE)
        if not path.is_file():
            raise FileNotFoundError(
                f"{checkpoint} holds no {RECORDS_FILE}: it was saved by a run without `training_dynamics`, so the "
                "confidence recorded before it is unknown. Resume it with the settings it was saved under, or start "
                "over (`--overwrite_output_dir true`)."
            )
        self.reset()
        with np.load(path) as stored:
            self._parts = [stored["records"]]

    # Decisions -----------------------------------------------------------------------------------------------
    def threshold(self, step: int, window: int) -> float | None:
        """The median mean response NLL of the records of steps [step - window, step); None when there are none.
        Read from the newest parts back (the window is a few steps), once per step."""
        if step not in self._thresholds:
            chosen = []
            for part in reversed(self._parts):
                inside = (part[:, 1] >= step - window) & (part[:, 1] < step) & (part[:, 3] > 0)
                chosen.append(part[inside])
                if len(part) and part[:, 1].min() < step - window:
                    break
            chosen = np.concatenate(chosen) if chosen else np.zeros((0, len(FIELDS)))
            self._thresholds = {step: float(np.median(chosen[:, 4] / chosen[:, 3])) if len(chosen) else None}
        return self._thresholds[step]

    def epoch_split(self, epoch: int, rows: np.ndarray) -> np.ndarray:
        """Confident flags for `rows` (raw rows, in the order of the prepared dataset) in `epoch` >= 1: the median
        split of the confidence over epochs 0..epoch-1 of the rows recorded with a response token in every one of
        them; the others are unconfident."""
        if epoch not in self._splits:
            means = [epoch_means(self.records, e) for e in range(epoch)]
            recorded = reduce(np.intersect1d, [m.row_index[m.num_tokens > 0] for m in means])
            flags = np.zeros(len(self.example_ids), dtype=bool)
            if len(recorded) >= 2:
                perplexities = np.stack([m.perplexity[np.searchsorted(m.row_index, recorded)] for m in means], axis=1)
                ids = [self.example_ids[r] for r in recorded.tolist()]
                flags[recorded] = split_confident(confidence(perplexities), ids, 0.5)
            self._splits = {epoch: flags}
        return self._splits[epoch][np.asarray(rows, dtype=np.int64)]

    def scores(self) -> tuple[list[CheckpointScores], list[str]]:
        """The complete epochs as the scores file's checkpoints: the rows recorded in every one of them."""
        table = self.records
        epochs = sorted(set(table[:, 0].astype(int).tolist()))
        if not epochs:
            return [], []
        first = set(table[table[:, 0] == epochs[0], 2].astype(int).tolist())
        complete = [e for e in epochs if first <= set(table[table[:, 0] == e, 2].astype(int).tolist())]
        per_epoch = [epoch_means(table, epoch, list(first)) for epoch in complete]
        return per_epoch, [f"epoch-{e + 1}" for e in complete]


def epoch_means(table: np.ndarray, epoch: int, rows=None) -> CheckpointScores:
    """Per row recorded in `epoch` (of `rows`, if given): its mean over that epoch's records of response tokens,
    perplexity and mean token probability (NaN perplexity for a row without a response token)."""
    part = table[table[:, 0] == epoch]
    if rows is not None:
        part = part[np.isin(part[:, 2], rows)]
    ids, inverse = np.unique(part[:, 2].astype(np.int64), return_inverse=True)
    counts = np.bincount(inverse)
    num_tokens = np.bincount(inverse, part[:, 3]) / counts
    with np.errstate(divide="ignore", invalid="ignore"):
        per_record = np.where(part[:, 3] > 0, part[:, 4] / part[:, 3], np.nan)
        perplexity = np.bincount(inverse, np.exp(np.nan_to_num(per_record))) / counts
        probability = np.bincount(inverse, np.nan_to_num(part[:, 5] / part[:, 3])) / counts
    perplexity[num_tokens == 0] = np.nan
    return CheckpointScores(ids, np.rint(num_tokens).astype(np.int64), perplexity, probability)
