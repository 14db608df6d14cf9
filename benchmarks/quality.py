"""What SFTMix buys on the embedded default: NTP vs SFTMix, equal steps and data, several seeds.

Runs `recipes/quickstart/ntp.yaml` and `recipes/quickstart/sftmix.yaml` (SmolLM2-135M-Instruct, chitchat
conversations + the project's medical QA; held-out split and the medical multiple-choice set) for each seed
and reports held-out loss, token accuracy, expected calibration error and multiple-choice accuracy as mean
and standard deviation, as a markdown table and a PNG. The dynamics pass runs once (seed of the first run)
and its split is reused by every SFTMix seed; its wall time is reported separately.

    python benchmarks/quality.py --seeds 0 1 2 --output-dir outputs/bench-quality
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

METRICS = (
    ("heldout loss", lambda r: r["heldout"]["loss"], "lower"),
    ("heldout token acc.", lambda r: r["heldout"]["token_accuracy"], "higher"),
    ("heldout ECE", lambda r: r["heldout"]["ece"], "lower"),
    ("medical MCQ acc.", lambda r: r["average_accuracy"], "higher"),
)


def run_one(recipe_path: str, seed: int, output_dir: Path, extra: list[str]) -> tuple[dict, float]:
    from sftmix.pipeline import run_all
    from sftmix.recipe import load_recipe

    recipe = load_recipe(recipe_path, ["--seed", str(seed), "--output_dir", str(output_dir), *extra])
    started = time.perf_counter()
    summary = run_all(recipe)
    return summary["evaluation"], time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", default="outputs/bench-quality")
    parser.add_argument("--recipes", default="recipes/quickstart")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    results = {"ntp": [], "sftmix": []}
    seconds = {"ntp": [], "sftmix": []}
    scores = None
    for seed in args.seeds:
        evaluation, took = run_one(f"{args.recipes}/ntp.yaml", seed, out / f"ntp-seed{seed}", [])
        results["ntp"].append(evaluation)
        seconds["ntp"].append(took)
        extra = [] if scores is None else ["--dynamics_path", str(scores)]
        evaluation, took = run_one(f"{args.recipes}/sftmix.yaml", seed, out / f"sftmix-seed{seed}", extra)
        if scores is None:
            scores = out / f"sftmix-seed{seed}" / "_dynamics" / "scores.parquet"
        results["sftmix"].append(evaluation)
        seconds["sftmix"].append(took)
    (out / "quality.json").write_text(json.dumps({"results": results, "seconds": seconds}, indent=2, default=str))
    table = render(results, seconds, args.seeds)
    print(table)
    (out / "quality.md").write_text(table)
    plot(results, out / "quality.png")
    print(f"\nwrote {out / 'quality.md'} and {out / 'quality.png'}")


def stats(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def render(results, seconds, seeds) -> str:
    lines = [
        f"NTP vs SFTMix on the quickstart data -- {datetime.date.today()} -- {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; seeds {seeds}; mean +- std",
        "",
        "| metric | NTP | SFTMix | better |",
        "|---|---|---|---|",
    ]
    for name, get, direction in METRICS:
        ntp, mix = stats([get(r) for r in results["ntp"]]), stats([get(r) for r in results["sftmix"]])
        better = (mix[0] < ntp[0]) == (direction == "lower")
        lines.append(
            f"| {name} ({direction} is better) | {ntp[0]:.4f} +- {ntp[1]:.4f} | {mix[0]:.4f} +- {mix[1]:.4f} | {'SFTMix' if better else 'NTP'} |"
        )
    lines += [
        "",
        f"Wall time per run (s): NTP {statistics.fmean(seconds['ntp']):.0f}; SFTMix with its dynamics pass "
        f"{seconds['sftmix'][0]:.0f} (first seed), SFTMix reusing the split "
        f"{statistics.fmean(seconds['sftmix'][1:]) if len(seconds['sftmix']) > 1 else float('nan'):.0f}.",
    ]
    return "\n".join(lines) + "\n"


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.2))
    for ax, (name, get, direction) in zip(axes, METRICS, strict=True):
        for i, method in enumerate(("ntp", "sftmix")):
            values = [get(r) for r in results[method]]
            mean, std = stats(values)
            ax.bar(i, mean, yerr=std, color=("#8c8c8c", "#d95f02")[i], capsize=4)
            ax.scatter([i] * len(values), values, color="black", s=8, zorder=3)
        ax.set_xticks([0, 1], ["NTP", "SFTMix"])
        ax.set_title(f"{name}\n({direction} is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
