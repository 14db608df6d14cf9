"""When does SFTMix help? NTP, SFTMix and the cheap alternatives users would try, several seeds, two regimes.

    python benchmarks/study.py                       # the CPU study (SmolLM2-135M-Instruct, quickstart data)
    python benchmarks/study.py --setting smoke       # the smallest setting: tiny model, seconds (used by a test)
    python benchmarks/study.py --setting gpu         # the GPU configuration (Qwen2.5-0.5B, Alpaca 10k; needs the Hub)

Regimes (recipes/study/): `one_pass` (the paper's: one pass over the data), `small_data` (few examples,
several epochs: plain SFT overfits, held-out loss rises in later epochs; Mixup is a regulariser, so this is
where it should show if anywhere) and `noisy` (uncurated data: `sftmix/quickstart-noisy`, 30% of the training
responses swapped between conversations and marked `corrupted`, several epochs, clean held-out data: do the
dynamics find the corrupted rows, and does Mixup resist them?). Arms, each `sftmix run --config recipes/study/<regime>.yaml` plus the
overrides in `ARMS` (printed per run, so one arm can be rerun alone):

- `ntp`: plain SFT (`--mixup_weight 0`);
- `sftmix`: the paper's mode, the split of a one-epoch reference run (made once per regime, shared by seeds);
- `sftmix_training`: the confidence recorded from the run's own training forward (`--dynamics.mode training`):
  no reference run, no scoring pass;
- `neftune`: TRL's NEFTune (`--neftune_noise_alpha 5`), the cheap alternative users know;
- `sftmix_neftune`: both; the NEFTune arms share the plain split (the split measures the data's difficulty for
  the model; NEFTune is a training-time perturbation of the run that uses the split, not of the data);
- `random_split`: Mixup with a random half instead of the confident half (`--dynamics.split random`): does the
  confidence matter?
- `mixup_weight_0.1`, `mixup_weight_0.5` (the paper's 0.2 is `sftmix`): the weight sweep, one regime only;
- `drop_least_confident` (noisy regime): plain NTP without the least confident 30% of the paper-mode split's
  examples (`--drop_least_confident 0.3`): mix the flagged rows, or drop them?

In the noisy regime the study also asks whether each way of scoring finds the corrupted rows: the share of
corrupted examples in the unconfident half (the random split gives the base rate) and the AUROC of confidence
for telling corrupted from clean, and how many of the review list's entries are corrupted.

Every arm runs with every seed on the same data order (`--seed`), so per-seed differences to NTP are paired.
Finished runs are kept and skipped (`result.json` in each run's directory): rerunning continues the study.
Output: `study.md` (tables: mean +- std per arm; mean +- std of the paired difference to NTP and whether it
exceeds two standard deviations), `study.json`, `study.png` (held-out learning curves per arm, reliability
diagrams NTP vs SFTMix).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

ROOT = Path(__file__).resolve().parents[1]

from cost import cpu_name  # noqa: E402  (benchmarks/ is on the path of a script run from it)

SPLIT = "{split}"  # replaced by the regime's shared scores file
SPLIT_IFD = "{split_ifd}"  # the same reference checkpoints scored by IFD (`--dynamics.confidence ifd`)

ARMS = {
    "ntp": ["--mixup_weight", "0"],
    "sftmix": ["--dynamics_path", SPLIT],
    "sftmix_training": ["--dynamics.mode", "training"],
    "neftune": ["--mixup_weight", "0", "--neftune_noise_alpha", "5"],
    "sftmix_neftune": ["--dynamics_path", SPLIT, "--neftune_noise_alpha", "5"],
    "random_split": [
        "--dynamics.split",
        "random",
        "--dynamics.scores_path",
        "{run_dir}/random_split.parquet",
    ],
    "mixup_weight_0.1": ["--dynamics_path", SPLIT, "--mixup_weight", "0.1"],
    "mixup_weight_0.5": ["--dynamics_path", SPLIT, "--mixup_weight", "0.5"],
    "drop_least_confident": [
        "--mixup_weight",
        "0",
        "--dynamics_path",
        SPLIT,
        "--drop_least_confident",
        "0.3",
    ],
    "sftmix_ifd": ["--dynamics_path", SPLIT_IFD],
    "drop_least_confident_ifd": [
        "--mixup_weight",
        "0",
        "--dynamics_path",
        SPLIT_IFD,
        "--drop_least_confident",
        "0.3",
    ],
}
SWEEP = ("mixup_weight_0.1", "mixup_weight_0.5")
REGIME_ARMS = {  # the arms of a regime when not all (the noisy regime: the question, at 2-core cost)
    "noisy": (
        "ntp",
        "sftmix",
        "sftmix_training",
        "sftmix_ifd",
        "neftune",
        "random_split",
        "drop_least_confident",
        "drop_least_confident_ifd",
    ),
}
NOISY_ONLY = ("drop_least_confident", "sftmix_ifd", "drop_least_confident_ifd")
IFD_REGIMES = ("noisy",)  # regimes whose split's checkpoints are also scored by IFD
MARK = "corrupted"

SETTINGS = {
    "cpu": {
        "regimes": {
            "one_pass": "recipes/study/one_pass.yaml",
            "small_data": "recipes/study/small_data.yaml",
            "noisy": "recipes/study/noisy.yaml",
        },
        "sweep_regime": "one_pass",
        "seeds": [0, 1, 2],
        "extra": [],
    },
    "smoke": {  # the tiny model built on the fly: the whole study end to end in seconds (tests)
        "regimes": {
            "one_pass": "recipes/study/one_pass.yaml",
            "small_data": "recipes/study/small_data.yaml",
            "noisy": "recipes/study/noisy.yaml",
        },
        "sweep_regime": "one_pass",
        "seeds": [0, 1, 2],
        "extra": [
            "--max_train_samples",
            "16",
            "--max_eval_samples",
            "8",
            "--max_length",
            "48",
            "--bf16",
            "false",
            "--per_device_train_batch_size",
            "4",
            "--dynamics.scoring_batch_size",
            "8",
            "--evaluation.max_examples",
            "8",
        ],  # fmt: skip
    },
    "gpu": {
        "regimes": {
            "one_pass": "recipes/study/gpu_one_pass.yaml",
            "small_data": "recipes/study/gpu_small_data.yaml",
        },
        "sweep_regime": "one_pass",
        "seeds": [0, 1, 2],
        "extra": [],
    },
}

METRICS = (  # name, how to read it from a run's result, which direction is better
    ("held-out loss", "heldout_loss", "lower"),
    ("token accuracy", "token_accuracy", "higher"),
    ("ECE", "ece", "lower"),
    ("medical MCQ accuracy", "mcq_accuracy", "higher"),
    ("held-out - train loss", "generalisation_gap", "lower"),
)


def arm_overrides(arm: str, split: Path, run_dir: Path) -> list[str]:
    return [
        a.replace(SPLIT, str(split)).replace(SPLIT_IFD, str(ifd_path(split))).replace("{run_dir}", str(run_dir))
        for a in ARMS[arm]
    ]


def ifd_path(split: Path) -> Path:
    return split.parent / "ifd" / "scores.parquet"


def run_pipeline(recipe: str, overrides: list[str]) -> dict:
    from sftmix.pipeline import run_all
    from sftmix.recipe import load_recipe

    return run_all(load_recipe(recipe, overrides))


def run_dynamics(recipe: str, overrides: list[str], name: str) -> float:
    """`sftmix dynamics` with these overrides; its wall time in seconds."""
    from sftmix.pipeline import run_dynamics
    from sftmix.recipe import load_recipe

    print(f"[study] {name}: sftmix dynamics --config {recipe} {' '.join(overrides)}", flush=True)
    started = time.perf_counter()
    run_dynamics(load_recipe(recipe, overrides))
    return time.perf_counter() - started


def make_split(recipe: str, out: Path, extra: list[str], with_ifd: bool = False) -> Path:
    """The regime's paper-mode split: one reference run (one epoch), shared by every seed of the SFTMix arms.

    `with_ifd`: its checkpoints are kept and scored again by IFD (`ifd_path`), then deleted; beside it, a scoring
    pass by perplexity at the same checkpoints (the IFD forward's cost, `ifd/seconds.json`) and the untrained
    model's IFD (Superfiltering's use: a model that was never tuned on the data)."""
    scores = out / "split" / "scores.parquet"
    reference = scores.parent / "reference"
    if with_ifd and not ifd_path(scores).is_file() and not reference.is_dir():
        scores.unlink(missing_ok=True)  # made without its checkpoints: run the reference again, keeping them
    if not scores.is_file():
        overrides = [*extra, "--output_dir", str(out / "split"), "--dynamics.scores_path", str(scores)]
        overrides += ["--dynamics.keep_reference_checkpoints", "true"] if with_ifd else []
        run_dynamics(recipe, overrides, "split")
    if with_ifd and not ifd_path(scores).is_file():
        from sftmix.modeling import resolve_model_path
        from sftmix.recipe import load_recipe

        checkpoints = sorted(reference.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        untrained = resolve_model_path(load_recipe(recipe, extra).model.model_name_or_path)
        seconds = {}
        for name, confidence, models in (
            ("untrained_ifd", "ifd", [untrained]),
            ("perplexity", "perplexity", checkpoints),
            ("ifd", "ifd", checkpoints),  # last: its file marks the step done
        ):
            path = scores.parent / name / "scores.parquet"
            overrides = [*extra, "--output_dir", str(path.parent), "--dynamics.scores_path", str(path)]
            overrides += ["--dynamics.confidence", confidence, "--dynamics.checkpoints", *map(str, models)]
            seconds[name] = run_dynamics(recipe, overrides, f"split by {name}")
            if name == "ifd":
                (path.parent / "seconds.json").write_text(json.dumps(seconds, indent=2))
        shutil.rmtree(reference)
    return scores


def read_result(run_dir: Path, summary: dict, seconds: float) -> dict:
    """The metrics of one finished run (from its summary and the Trainer's log history)."""
    evaluation = summary.get("evaluation") or {}
    heldout = evaluation.get("heldout") or {}
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    curve = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
    train = [h.get("ntp_loss", h.get("loss")) for h in history if "loss" in h]
    last_epoch = max((h["epoch"] for h in history if "loss" in h), default=0)
    final_train = [
        h.get("ntp_loss", h["loss"]) for h in history if "loss" in h and h["epoch"] > last_epoch - 1 + 1e-9
    ] or train[-1:]
    benchmarks = evaluation.get("benchmarks") or {}
    accuracies = [b["accuracy"] for b in benchmarks.values() if b.get("accuracy") is not None]
    result = {
        "heldout_loss": heldout.get("loss"),
        "token_accuracy": heldout.get("token_accuracy"),
        "ece": heldout.get("ece"),
        "mcq_accuracy": statistics.fmean(accuracies) if accuracies else None,
        "train_loss": statistics.fmean(final_train) if final_train else None,
        "curve": curve,
        "reliability": heldout.get("reliability"),
        "seconds": round(seconds, 1),
    }
    if result["heldout_loss"] is not None and result["train_loss"] is not None:
        result["generalisation_gap"] = result["heldout_loss"] - result["train_loss"]
    return result


def run_arm(recipe: str, arm: str, seed: int, out: Path, split: Path, extra: list[str]) -> dict:
    run_dir = out / arm / f"seed{seed}"
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [
        *extra,
        *arm_overrides(arm, split, run_dir),
        "--seed",
        str(seed),
        "--output_dir",
        str(run_dir),
    ]
    overrides += [
        "--overwrite_output_dir",
        "true",
    ]  # an interrupted run starts over; finished ones are skipped
    print(f"[study] {arm} seed {seed}: sftmix run --config {recipe} {' '.join(overrides)}", flush=True)
    started = time.perf_counter()
    summary = run_pipeline(recipe, overrides)
    result = read_result(run_dir, summary, time.perf_counter() - started)
    result["command"] = f"sftmix run --config {recipe} " + " ".join(overrides)
    done.write_text(json.dumps(result, indent=2, default=str))
    return result


def arms_of(regime: str, setting: dict) -> list[str]:
    if regime in REGIME_ARMS:
        return list(REGIME_ARMS[regime])
    return [a for a in ARMS if (a not in SWEEP or regime == setting["sweep_regime"]) and a not in NOISY_ONLY]


def auroc(scores, positives) -> float | None:
    """P(score of a positive > score of a negative), ties counting half (the Mann-Whitney statistic)."""
    import numpy as np
    from scipy.stats import rankdata

    scores, positives = np.asarray(scores, dtype=float), np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0 or not np.isfinite(scores).all():
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection(scores_path: Path, turns=None) -> dict | None:
    """How a scores file's split finds the marked (corrupted) rows: their share of the unconfident half, the AUROC
    of minus confidence for them (also apart on single- and multi-turn rows, `turns`: assistant turns by raw row),
    and how many of the review list's entries are marked."""
    import numpy as np
    import pandas as pd

    if not scores_path.is_file():
        return None
    frame = pd.read_parquet(scores_path)
    if MARK not in frame.columns:
        return None
    unconfident = frame[~frame["confident"]]
    review = scores_path.with_name(scores_path.stem.replace("scores", "") + "review.csv")
    listed = pd.read_csv(review) if review.is_file() else None
    found = {
        "corrupted_share": float(frame[MARK].mean()),
        "corrupted_in_unconfident": float(unconfident[MARK].mean()),
        "auroc": auroc(-frame["confidence"], frame[MARK]),
        "review_corrupted": None if listed is None else f"{int(listed[MARK].sum())} of {len(listed)}",
    }
    if turns is not None:
        single = np.asarray(turns)[frame["row_index"].to_numpy()] == 1
        for name, rows in (("single_turn", single), ("multi_turn", ~single)):
            found[f"auroc_{name}"] = auroc(-frame["confidence"][rows], frame[MARK][rows])
            found[f"corrupted_{name}"] = f"{int(frame[MARK][rows].sum())} of {int(rows.sum())}"
    return found


def assistant_turns(recipe: str, extra: list[str]) -> list[int]:
    """The number of assistant turns of each training row, as the pipeline loads them (the recipe's data)."""
    from sftmix.data import load_sft_data
    from sftmix.recipe import load_recipe

    train, _ = load_sft_data(load_recipe(recipe, extra).data, (MARK,))
    return [sum(m["role"] == "assistant" for m in row["messages"] or []) for row in train]


def detections(out: Path, split: Path, seeds, turns=None) -> dict:
    """Every way of scoring the noisy regime ran: the paper-mode split, IFD at its checkpoints and on the untrained
    model, the training mode per seed, the random split."""
    found = {"paper mode (one-epoch reference)": [detection(split, turns)]}
    found["IFD (the same checkpoints)"] = [detection(ifd_path(split), turns)]
    found["IFD of the untrained model"] = [detection(split.parent / "untrained_ifd" / "scores.parquet", turns)]
    found["training mode"] = [
        detection(out / "sftmix_training" / f"seed{s}" / "_dynamics" / "scores.parquet", turns) for s in seeds
    ]
    found["random split (base rate)"] = [
        detection(out / "random_split" / f"seed{s}" / "random_split.parquet", turns) for s in seeds
    ]
    return {name: [d for d in runs if d] for name, runs in found.items() if any(runs)}


def render_detection(found: dict) -> list[str]:
    first = next(iter(found.values()))[0]
    parts = [p for p in ("single_turn", "multi_turn") if f"corrupted_{p}" in first]
    lines = [
        "Do the dynamics find the corrupted rows? (mean over seeds where there are several)",
        "",
        "| way of scoring | corrupted share | corrupted in the unconfident half | AUROC (confidence) | review list |"
        + "".join(f" AUROC, {p.replace('_', '-')} rows ({first[f'corrupted_{p}']} corrupted) |" for p in parts),
        "|---|---|---|---|---|" + "---|" * len(parts),
    ]

    def mean_auroc(runs, key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return f"{statistics.fmean(values):.3f}" if values else "n/a"

    for name, runs in found.items():
        share = statistics.fmean(r["corrupted_share"] for r in runs)
        inside = statistics.fmean(r["corrupted_in_unconfident"] for r in runs)
        review = ", ".join(str(r["review_corrupted"]) for r in runs if r["review_corrupted"]) or "n/a"
        cells = "".join(f" {mean_auroc(runs, f'auroc_{p}')} |" for p in parts)
        lines.append(f"| {name} | {share:.3f} | {inside:.3f} | {mean_auroc(runs, 'auroc')} | {review} |{cells}")
    return lines + [""]


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def ifd_cost(split: Path) -> dict | None:
    """The seconds of `sftmix dynamics` at the split's checkpoints, by perplexity and by IFD (`make_split`)."""
    path = ifd_path(split).with_name("seconds.json")
    return json.loads(path.read_text()) if path.is_file() else None


def render_cost(seconds: dict) -> list[str]:
    return [
        f"IFD's cost: `sftmix dynamics` at the same checkpoints took {seconds['ifd']:.0f} s with "
        f"`confidence: ifd` against {seconds['perplexity']:.0f} s with the paper's perplexity "
        f"({seconds['ifd'] / seconds['perplexity']:.2f}x; model loads included, no reference run in either).",
        "",
    ]


def render(results: dict, seeds, wall: float, found: dict | None = None, costs: dict | None = None) -> str:
    lines = [
        f"SFTMix study -- {datetime.date.today()} -- {cpu_name()}, {os.cpu_count()} CPU cores, "
        f"seeds {seeds}, wall time {wall / 60:.0f} min (runs skipped when already finished are not timed again).",
        "",
    ]
    for regime, arms in results.items():
        lines += [f"### {regime}", "", "| arm | " + " | ".join(m[0] for m in METRICS) + " | s/run |"]
        lines.append("|---" * (len(METRICS) + 2) + "|")
        for arm, runs in arms.items():
            cells = []
            for _, key, _ in METRICS:
                mean, std = mean_std([r.get(key) for r in runs])
                cells.append("n/a" if mean is None else f"{mean:.4f} +- {std:.4f}")
            seconds = statistics.fmean(r["seconds"] for r in runs)
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {seconds:.0f} |")
        lines += [
            "",
            f"Paired difference to NTP (same seed), mean +- std; ** = |mean| > 2 std ({regime})",
            "",
        ]
        lines += ["| arm | " + " | ".join(f"{m[0]} ({m[2]} is better)" for m in METRICS) + " |"]
        lines.append("|---" * (len(METRICS) + 1) + "|")
        for arm, runs in arms.items():
            if arm == "ntp":
                continue
            cells = []
            for _, key, _ in METRICS:
                diffs = [
                    r[key] - n[key]
                    for r, n in zip(runs, arms["ntp"], strict=True)
                    if r.get(key) is not None and n.get(key) is not None
                ]
                mean, std = mean_std(diffs)
                if mean is None:
                    cells.append("n/a")
                    continue
                mark = " **" if std is not None and abs(mean) > 2 * std and len(diffs) > 1 else ""
                cells.append(f"{mean:+.2g} +- {std:.2g}{mark}")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
        if found and found.get(regime):
            lines += render_detection(found[regime])
        if costs and costs.get(regime):
            lines += render_cost(costs[regime])
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(results)
    fig, axes = plt.subplots(1, len(regimes) + 1, figsize=(5.2 * (len(regimes) + 1), 4))
    for ax, regime in zip(axes, regimes, strict=False):
        arms = {
            arm: [r["curve"] or [(1.0, r["heldout_loss"])] for r in runs if r.get("heldout_loss") is not None]
            for arm, runs in results[regime].items()
        }
        arms = {arm: curves for arm, curves in arms.items() if curves}
        if all(len(c) == 1 for curves in arms.values() for c in curves):
            # evaluated once, at the end: one point per arm with its seed spread, so an arm apart from NTP shows
            for x, (arm, curves) in enumerate(arms.items()):
                values = [c[0][1] for c in curves]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                ax.errorbar(x, statistics.fmean(values), yerr=spread, fmt="o", capsize=4, label=arm)
            ax.set_xticks(range(len(arms)), list(arms), rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{regime}: held-out loss (mean +- std over seeds)")
            ax.legend(fontsize=7)
            continue
        for arm, curves in arms.items():
            length = min(len(c) for c in curves)
            epochs = [curves[0][i][0] for i in range(length)]
            means = [statistics.fmean(c[i][1] for c in curves) for i in range(length)]
            ax.plot(epochs, means, marker="o", label=arm, linewidth=2.2 if arm in ("ntp", "sftmix") else 1.2)
        ax.set_title(f"{regime}: held-out loss (mean over seeds)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    ax = axes[-1]
    first = regimes[0]
    for arm, color in (("ntp", "#7f7f7f"), ("sftmix", "#d95f02")):
        bins = [r["reliability"]["bins"] for r in results[first].get(arm, []) if r.get("reliability")]
        if not bins:
            continue
        xs, ys = [], []
        for b in range(len(bins[0])):
            count = sum(run[b]["count"] for run in bins)
            if count:
                xs.append(sum(run[b]["count"] * (run[b]["mean_confidence"] or 0) for run in bins) / count)
                ys.append(sum(run[b]["count"] * (run[b]["accuracy"] or 0) for run in bins) / count)
        ax.plot(xs, ys, marker="o", color=color, label=arm)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_title(f"{first}: reliability (token level, pooled seeds)")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=list(SETTINGS), default="cpu")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--arms", nargs="+", default=None, help="Run only these arms (default: all).")
    parser.add_argument("--regimes", nargs="+", default=None, help="Run only these regimes (default: all).")
    parser.add_argument("--model", default=None, help="Override the recipes' model (the smoke test's tiny one).")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    seeds = args.seeds or setting["seeds"]
    out = Path(args.output_dir or f"outputs/study-{args.setting}")
    extra = list(setting["extra"]) + (["--model_name_or_path", args.model] if args.model else [])
    started = time.perf_counter()
    results: dict = {}
    found: dict = {}
    costs: dict = {}
    for regime, recipe in setting["regimes"].items():
        if args.regimes and regime not in args.regimes:
            continue
        recipe = str(ROOT / recipe)
        split = make_split(recipe, out / regime, extra, with_ifd=regime in IFD_REGIMES)
        results[regime] = {}
        for arm in arms_of(regime, setting):
            if args.arms and arm not in args.arms and arm != "ntp":
                continue
            results[regime][arm] = [run_arm(recipe, arm, s, out / regime, split, extra) for s in seeds]
        turns = assistant_turns(recipe, extra) if regime in IFD_REGIMES else None
        found[regime] = detections(out / regime, split, seeds, turns)
        costs[regime] = ifd_cost(split)
        data_map = split.with_name("data_map.png")
        if found[regime] and data_map.is_file():  # the corrupted rows circled on the paper-mode split's data map
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_map, out / f"{regime}_data_map.png")
            if ifd_path(split).with_name("data_map.png").is_file():  # the same rows, placed by IFD
                shutil.copyfile(ifd_path(split).with_name("data_map.png"), out / f"{regime}_ifd_data_map.png")
    wall = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    summary = {**results, "detection": found, "ifd_seconds": costs}
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    table = render(results, seeds, wall, found, costs)
    (out / "study.md").write_text(table)
    plot(results, out / "study.png")
    print(table)
    print(f"wrote {out / 'study.md'}, {out / 'study.json'} and {out / 'study.png'}")
    return results


if __name__ == "__main__":
    main()
