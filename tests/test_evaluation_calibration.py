"""Calibration math against naive references: bins by explicit comparisons, ECE by a Python loop."""

import numpy as np
import pytest

from sftmix.evaluation.calibration import (
    ReliabilityStats,
    bin_edges,
    bin_index,
    expected_calibration_error,
)
from sftmix.evaluation.reliability_plot import plot_reliability_diagram


def naive_bins(confidence, num_bins):
    """Bin b holds lo < c <= hi; c == 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    out = []
    for c in confidence:
        for b in range(num_bins):
            if (edges[b] < c <= edges[b + 1]) or (b == 0 and c == 0.0):
                out.append(b)
                break
    return out


def naive_ece(confidence, correct, num_bins=15):
    bins = naive_bins(confidence, num_bins)
    n, total = len(confidence), 0.0
    for b in range(num_bins):
        members = [i for i in range(n) if bins[i] == b]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            conf = sum(confidence[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


def random_predictions(n, seed):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0, 1, n)
    correct = rng.uniform(0, 1, n) < confidence**2  # over-confident
    return confidence, correct


@pytest.mark.parametrize("num_bins", [1, 10, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_matches_naive_loop(num_bins, seed):
    confidence, correct = random_predictions(500, seed)
    assert expected_calibration_error(confidence, correct, num_bins) == pytest.approx(
        naive_ece(list(confidence), list(correct), num_bins), abs=1e-12
    )


def test_bin_edges_are_right_closed_and_zero_goes_to_the_first_bin():
    edges = bin_edges(15)
    values = np.concatenate([edges, np.nextafter(edges, 2), np.nextafter(edges, -1)]).clip(0, 1)
    assert bin_index(values, 15).tolist() == naive_bins(values, 15)
    assert bin_index([0.0, 1 / 15, 1.0], 15).tolist() == [0, 0, 14]


def test_per_bin_accuracy_and_confidence_match_explicit_means():
    confidence, correct = random_predictions(300, 3)
    stats = ReliabilityStats.from_predictions(confidence, correct, 15)
    bins = np.array(naive_bins(confidence, 15))
    for b in range(15):
        members = bins == b
        assert stats.count[b] == members.sum()
        if members.any():
            assert stats.accuracy()[b] == pytest.approx(correct[members].mean())
            assert stats.mean_confidence()[b] == pytest.approx(confidence[members].mean())
        else:
            assert np.isnan(stats.accuracy()[b]) and np.isnan(stats.mean_confidence()[b])
    assert stats.total == 300


def test_batches_add_up_to_the_whole():
    confidence, correct = random_predictions(400, 4)
    whole = ReliabilityStats.from_predictions(confidence, correct)
    parts = ReliabilityStats.empty(15)
    for start in range(0, 400, 37):
        parts = parts + ReliabilityStats.from_predictions(confidence[start : start + 37], correct[start : start + 37])
    assert np.array_equal(parts.count, whole.count)
    assert parts.expected_calibration_error() == pytest.approx(whole.expected_calibration_error(), abs=1e-12)


def test_calibrated_and_maximally_miscalibrated_extremes():
    # Every token at confidence 0.8 and 80% of them right: ECE 0. All at 0.99 and all wrong: ECE 0.99.
    assert expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error([0.99] * 10, [False] * 10) == pytest.approx(0.99)
    assert np.isnan(ReliabilityStats.empty(15).expected_calibration_error())


def test_mismatched_lengths_and_bin_counts_are_errors():
    with pytest.raises(ValueError, match="3 confidences but 2"):
        ReliabilityStats.from_predictions([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="15 and 10 bins"):
        ReliabilityStats.empty(15) + ReliabilityStats.empty(10)


def test_reliability_diagram_is_a_png(tmp_path):
    confidence, correct = random_predictions(1000, 5)
    stats = ReliabilityStats.from_predictions(confidence, correct)
    path = plot_reliability_diagram(stats, tmp_path / "sub" / "reliability.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    row = stats.to_dict()["bins"][3]
    assert row["count"] == int(stats.count[3]) and row["lower"] == pytest.approx(3 / 15)
