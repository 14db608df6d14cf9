"""Token-level calibration: reliability bins and the expected calibration error (ECE).

Each scored token contributes its confidence (the largest next-token probability) and whether the argmax was
the label. Bin b of M equal-width bins holds the confidences in (b/M, (b+1)/M] (a confidence of 0 goes to the
first bin), and

    ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|.

`ReliabilityStats` keeps per-bin sums only, so batches are added up without storing every token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bin_edges(num_bins: int = 15) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_bins + 1)


def bin_index(confidence, num_bins: int = 15) -> np.ndarray:
    """Index of the bin (lo, hi] holding each confidence."""
    return np.digitize(np.asarray(confidence, dtype=np.float64), bin_edges(num_bins)[1:-1], right=True)


@dataclass
class ReliabilityStats:
    count: np.ndarray  # tokens per bin
    confidence_sum: np.ndarray  # sum of confidences per bin
    correct_sum: np.ndarray  # correct predictions per bin

    @classmethod
    def empty(cls, num_bins: int = 15) -> ReliabilityStats:
        return cls(np.zeros(num_bins, np.int64), np.zeros(num_bins), np.zeros(num_bins))

    @classmethod
    def from_predictions(cls, confidence, correct, num_bins: int = 15) -> ReliabilityStats:
        confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
        correct = np.asarray(correct, dtype=np.float64).reshape(-1)
        if confidence.shape != correct.shape:
            raise ValueError(f"{confidence.size} confidences but {correct.size} correctness flags.")
        index = bin_index(confidence, num_bins)
        return cls(
            np.bincount(index, minlength=num_bins).astype(np.int64),
            np.bincount(index, weights=confidence, minlength=num_bins),
            np.bincount(index, weights=correct, minlength=num_bins),
        )

    def __add__(self, other: ReliabilityStats) -> ReliabilityStats:
        if self.num_bins != other.num_bins:
            raise ValueError(f"Cannot add reliability stats with {self.num_bins} and {other.num_bins} bins.")
        return ReliabilityStats(
            self.count + other.count,
            self.confidence_sum + other.confidence_sum,
            self.correct_sum + other.correct_sum,
        )

    @property
    def num_bins(self) -> int:
        return len(self.count)

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def accuracy(self) -> np.ndarray:
        """Accuracy per bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.correct_sum / self.count, np.nan)

    def mean_confidence(self) -> np.ndarray:
        """Mean confidence per bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.confidence_sum / self.count, np.nan)

    def expected_calibration_error(self) -> float:
        if self.total == 0:
            return float("nan")
        # |B_b|/N * |acc_b - conf_b| = |correct_sum_b - confidence_sum_b| / N
        return float(np.abs(self.correct_sum - self.confidence_sum).sum() / self.total)

    def max_calibration_error(self) -> float:
        gaps = np.abs(self.accuracy() - self.mean_confidence())
        return float(np.nanmax(gaps)) if self.total else float("nan")

    def to_dict(self) -> dict:
        """Per-bin rows for results.json (empty bins have null accuracy and confidence)."""
        edges = bin_edges(self.num_bins)
        accuracy, confidence = self.accuracy(), self.mean_confidence()
        return {
            "num_bins": self.num_bins,
            "bins": [
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "count": int(self.count[b]),
                    "accuracy": None if np.isnan(accuracy[b]) else float(accuracy[b]),
                    "mean_confidence": None if np.isnan(confidence[b]) else float(confidence[b]),
                }
                for b in range(self.num_bins)
            ],
        }


def expected_calibration_error(confidence, correct, num_bins: int = 15) -> float:
    return ReliabilityStats.from_predictions(confidence, correct, num_bins).expected_calibration_error()
