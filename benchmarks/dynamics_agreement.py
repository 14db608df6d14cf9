"""How much does a cheaper way of scoring change the split? Agreement between ways of running the dynamics pass.

On the study's one-pass data (recipes/study/one_pass.yaml: SmolLM2-135M-Instruct, quickstart data), the pass
runs these ways and every pair is compared by the Spearman correlation of the examples' confidence and the
Jaccard overlap of their confident halves:

- `full`: the paper's mode with a reference run as long as a 3-epoch SFTMix run (the old default);
- `one_epoch`: the paper's mode with the one-epoch reference (today's default);
- `training`: the SFTMix run itself, confidence recorded from its training forward (`--dynamics.mode training`;
  the whole SFTMix run, as `sftmix train` runs it);
- `weak`: a weaker reference: SmolLM2-135M-Instruct truncated to its first third of layers (10 of 30), trained
  and scored like `one_epoch` (offline, only SmolLM2-135M is available).

It also reports, for the one-epoch reference (C checkpoints inside one epoch), the Spearman correlation between an
example's position in the reference run's data order and its confidence: early checkpoints score examples the
reference has not seen yet, so confidence may track data order.

    python benchmarks/dynamics_agreement.py --output-dir outputs/agreement
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import time
from pathlib import Path

from cost import cpu_name  # (benchmarks/ is on the path of a script run from it)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "study" / "one_pass.yaml")

MODES = {
    "full": ["--dynamics.reference_num_train_epochs", "3", "--dynamics.num_checkpoints", "3"],
    "one_epoch": ["--dynamics.num_checkpoints", "2"],
    "training": ["--dynamics.mode", "training"],
    "weak": ["--dynamics.num_checkpoints", "2"],  # + the truncated model
}


def truncated_smollm2(directory: Path, num_layers: int) -> Path:
    """SmolLM2-135M-Instruct keeping its first `num_layers` decoder layers (a weaker reference)."""
    if (directory / "config.json").is_file():
        return directory
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftmix.quickstart.smollm2 import smollm2_path

    source = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(source)
    model.model.layers = model.model.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:num_layers]
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def run_mode(name: str, out: Path, extra: list[str]) -> tuple[Path, float]:
    from sftmix.pipeline import run_dynamics, run_train
    from sftmix.recipe import load_recipe

    scores = out / name / "_dynamics" / "scores.parquet"
    if scores.is_file():
        return scores, float("nan")
    overrides = [*MODES[name], *extra, "--output_dir", str(out / name), "--dynamics.scores_path", str(scores)]
    if name == "full":  # as long as a 3-epoch SFTMix run
        overrides += ["--num_train_epochs", "3"]
    command = "train" if name == "training" else "dynamics"
    print(f"[agreement] {name}: sftmix {command} --config {RECIPE} {' '.join(overrides)}", flush=True)
    started = time.perf_counter()
    (run_train if name == "training" else run_dynamics)(load_recipe(RECIPE, overrides))
    return scores, time.perf_counter() - started


def reference_order(out: Path) -> dict[str, int]:
    """Example id -> position in the one-epoch reference run's first-epoch data order, read off the Trainer's own
    dataloader (same seed, same preparation) by matching token sequences."""
    from sftmix.data import load_sft_data
    from sftmix.dynamics.config import reference_training_config, scoring_config
    from sftmix.dynamics.examples import with_row_index
    from sftmix.dynamics.reference import DynamicsTrainer, prepare_examples
    from sftmix.modeling import load_model_and_tokenizer
    from sftmix.recipe import load_recipe
    from sftmix.scores import dataset_example_ids

    recipe = load_recipe(RECIPE, [*MODES["one_epoch"], "--output_dir", str(out / "order")])
    train, _ = load_sft_data(recipe.data)
    model, tokenizer, _ = load_model_and_tokenizer(recipe.model, recipe.training)
    ids = dataset_example_ids(train)
    prepared = prepare_examples(with_row_index(train), tokenizer, scoring_config(recipe.training, out / "order"))
    config = reference_training_config(recipe.training, out / "order", recipe.dynamics, len(prepared))
    trainer = DynamicsTrainer(model, config, train_dataset=prepared, processing_class=tokenizer)
    by_tokens = {tuple(row["input_ids"]): row["sftmix_row_index"] for row in prepared}
    order, position = {}, 0
    for batch in trainer.get_train_dataloader():
        for input_ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True):
            row = by_tokens[tuple(t for t, m in zip(input_ids, mask, strict=True) if m)]
            order.setdefault(ids[row], position)
            position += 1
    return order


def compare(a, b) -> tuple[float, float]:
    """(Spearman correlation of confidence, Jaccard overlap of the confident halves) over shared examples."""
    from scipy.stats import spearmanr

    joined = a.set_index("example_id")[["confidence", "confident"]].join(
        b.set_index("example_id")[["confidence", "confident"]], lsuffix="_a", rsuffix="_b", how="inner"
    )
    rho = spearmanr(joined["confidence_a"], joined["confidence_b"]).statistic
    ca, cb = set(joined.index[joined["confident_a"]]), set(joined.index[joined["confident_b"]])
    return float(rho), len(ca & cb) / max(len(ca | cb), 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/agreement")
    parser.add_argument("--weak-layers", type=int, default=10)
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    from scipy.stats import spearmanr

    from sftmix.scores import read_scores

    weak = truncated_smollm2(out / f"smollm2-135m-first{args.weak_layers}layers", args.weak_layers)
    frames, seconds = {}, {}
    for name in MODES:
        extra = ["--model_name_or_path", str(weak)] if name == "weak" else []
        path, took = run_mode(name, out, extra)
        frames[name], seconds[name] = read_scores(path)[0], took
    order = reference_order(out)
    one_epoch = frames["one_epoch"]
    positions = [order[e] for e in one_epoch["example_id"]]
    order_rho = float(spearmanr(positions, one_epoch["confidence"]).statistic)
    per_checkpoint = [
        float(spearmanr(positions, [-p[c] for p in one_epoch["perplexities"]]).statistic)
        for c in range(len(one_epoch["perplexities"].iloc[0]))
    ]
    lines = [
        f"Agreement between ways of scoring -- {datetime.date.today()} -- {cpu_name()}, "
        f"{os.cpu_count()} CPU cores; {len(one_epoch)} examples (recipes/study/one_pass.yaml)",
        "",
        "| pair | Spearman (confidence) | Jaccard (confident halves) |",
        "|---|---|---|",
    ]
    results = {"pairs": {}, "seconds": seconds}
    for a, b in itertools.combinations(MODES, 2):
        rho, jaccard = compare(frames[a], frames[b])
        results["pairs"][f"{a} vs {b}"] = {"spearman": rho, "jaccard": jaccard}
        lines.append(f"| {a} vs {b} | {rho:.3f} | {jaccard:.3f} |")
    lines += [
        "",
        "Random halves would give Jaccard 1/3 on average (Spearman 0).",
        "",
        f"One-epoch reference: Spearman(position in the reference run's data order, confidence) = {order_rho:.3f}; "
        "per checkpoint (minus perplexity): " + ", ".join(f"{r:.3f}" for r in per_checkpoint),
        "",
        "Wall time of each pass (s; training: the whole SFTMix run it is part of): "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    ]
    results.update(order_spearman=order_rho, order_spearman_per_checkpoint=per_checkpoint)
    table = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.md").write_text(table)
    (out / "agreement.json").write_text(json.dumps(results, indent=2))
    print(table)


if __name__ == "__main__":
    main()
