"""The reliability diagram: accuracy against confidence per bin, with the token count of each bin below.

Drawn with matplotlib's object API on the Agg canvas, so it neither needs a display nor changes the backend of a
session that imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sftmix.evaluation.calibration import ReliabilityStats, bin_edges


def plot_reliability_diagram(stats: ReliabilityStats, path: str | Path, title: str = "Reliability diagram") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    edges = bin_edges(stats.num_bins)
    width = edges[1] - edges[0]
    centres = edges[:-1] + width / 2
    accuracy = np.nan_to_num(stats.accuracy())
    confidence = np.where(stats.count > 0, stats.mean_confidence(), centres)

    figure = Figure(figsize=(5, 6))
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres, accuracy, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    gap_low = np.minimum(accuracy, confidence)
    top.bar(
        centres,
        np.abs(confidence - accuracy) * (stats.count > 0),
        bottom=gap_low,
        width=width,
        color="tab:red",
        alpha=0.3,
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nECE = {stats.expected_calibration_error():.4f} ({stats.total:,} tokens)")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, stats.count, width=width, edgecolor="black", color="tab:gray")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (max next-token probability)")
    bottom.set_ylabel("tokens")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
