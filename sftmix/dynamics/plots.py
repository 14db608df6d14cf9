"""The pictures next to the scores file: the Cartography data map and the confidence histogram (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GROUP_COLOURS = {True: "#1f77b4", False: "#d62728"}
GROUP_NAMES = {True: "confident", False: "unconfident"}


def picture_paths(scores_path: str | Path) -> dict[str, Path]:
    """`data_map.png` and `confidence_histogram.png` next to `scores.parquet` (the default name); for any other
    name the scores file's stem is prefixed (`run1_data_map.png`), so that several files can share a folder."""
    scores_path = Path(scores_path)
    prefix = "" if scores_path.stem == "scores" else f"{scores_path.stem}_"
    return {
        "data_map": scores_path.with_name(f"{prefix}data_map.png"),
        "confidence_histogram": scores_path.with_name(f"{prefix}confidence_histogram.png"),
    }


def _spans_decades(confidence) -> bool:
    """Perplexities often have a long tail (confidence = -perplexity <= -1): then a log scale shows the bulk."""
    magnitude = -np.asarray(confidence, dtype=np.float64)
    return magnitude.min() > 0 and magnitude.max() / magnitude.min() > 10


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def draw_data_map(frame, path: Path) -> Path:
    """x = variability, y = mean probability (Cartography's axes) and y = the paper's confidence, one point per
    example, coloured by group."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    size = max(2.0, min(20.0, 4000.0 / max(len(frame), 1)))
    for ax, column, label in (
        (axes[0], "mean_probability", "mean probability of response tokens"),
        (axes[1], "confidence", "confidence = - mean perplexity"),
    ):
        for group in (False, True):
            rows = frame[frame["confident"] == group]
            ax.scatter(
                rows["variability"],
                rows[column],
                s=size,
                alpha=0.6,
                c=GROUP_COLOURS[group],
                label=f"{GROUP_NAMES[group]} ({len(rows)})",
                linewidths=0,
            )
        ax.set_xlabel("variability (std of mean probability over checkpoints)")
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8)
    if _spans_decades(frame["confidence"]):
        axes[1].set_yscale("symlog", linthresh=1.0)
    fig.suptitle(f"Data map: {len(frame)} examples")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_confidence_histogram(frame, path: Path) -> Path:
    """Histogram of confidence by group, with the split threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    values = frame["confidence"].to_numpy()
    count = min(60, max(10, len(values) // 20))
    if _spans_decades(values):
        bins = -np.geomspace(-values.min(), -values.max(), count + 1)
        ax.set_xscale("symlog", linthresh=1.0)
    else:
        bins = np.histogram_bin_edges(values, bins=count)
    for group in (False, True):
        ax.hist(
            frame.loc[frame["confident"] == group, "confidence"],
            bins=bins,
            alpha=0.7,
            color=GROUP_COLOURS[group],
            label=GROUP_NAMES[group],
        )
    threshold = frame.loc[frame["confident"], "confidence"].min()
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"split at {threshold:.3g}")
    ax.set_xlabel("confidence = - mean perplexity over checkpoints")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_pictures(frame, scores_path: str | Path) -> dict[str, Path]:
    paths = picture_paths(scores_path)
    draw_data_map(frame, paths["data_map"])
    draw_confidence_histogram(frame, paths["confidence_histogram"])
    return paths
