"""The evaluation report: results.json (every number, accuracies as fractions) and results.md (the paper's
table layout, accuracies in %), plus per-question predictions for later analysis."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sftmix.evaluation.config import BENCHMARK_TITLES, BENCHMARKS

HEADLINE_NAMES = {
    "acc_norm": "log-likelihood per character (lm-eval's acc_norm)",
    "acc": "summed log-likelihood (lm-eval's acc)",
}


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def markdown_report(results: dict) -> str:
    lines = [f"# Evaluation of {results.get('model', 'the model')}", ""]
    benchmarks = results.get("benchmarks") or {}
    if benchmarks:
        names = [n for n in BENCHMARKS if n in benchmarks]
        headline = results.get("headline", "acc_norm")
        lines += [
            "## Healthcare benchmarks",
            "",
            f"Accuracy (%) by lm-evaluation-harness (`{results.get('benchmark_style')}` tasks), each choice scored by "
            f"its {HEADLINE_NAMES[headline]}.",
            "",
            "| model | " + " | ".join(BENCHMARK_TITLES[n] for n in names) + " | Average |",
            "|---" * (len(names) + 2) + "|",
            f"| {results.get('model_name', 'model')} | "
            + " | ".join(_percent(benchmarks[n]["accuracy"]) for n in names)
            + f" | {_percent(results.get('average_accuracy'))} |",
            "",
        ]
        if len(names) < len(BENCHMARKS):
            lines += [f"The average is over the {len(names)} benchmarks evaluated, not the paper's four.", ""]
        lines += ["| benchmark | lm-eval task | questions | acc | acc_norm | source |", "|---|---|---|---|---|---|"]
        for n in names:
            b = benchmarks[n]
            lines.append(
                f"| {BENCHMARK_TITLES[n]} | {b.get('task', '')} | {b['questions']} | {_percent(b['acc'])} "
                f"| {_percent(b['acc_norm'])} | {b.get('source', '')} |"
            )
        lines.append("")
    heldout = results.get("heldout")
    if heldout:
        bins = heldout["reliability"]["num_bins"]
        lines += [
            "## Held-out next-token prediction",
            "",
            "Token level, over the trainable tokens (assistant / completion tokens, as in training).",
            "",
            f"| examples | tokens | loss | perplexity | token accuracy (%) | ECE ({bins} bins) |",
            "|---|---|---|---|---|---|",
            f"| {heldout['examples']} | {heldout['tokens']} | {heldout['loss']:.4f} | {heldout['perplexity']:.3f} "
            f"| {_percent(heldout['token_accuracy'])} | {heldout['ece']:.4f} |",
            "",
        ]
        if results.get("files", {}).get("reliability_diagram"):
            lines += [f"![reliability diagram]({Path(results['files']['reliability_diagram']).name})", ""]
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_report(results: dict, output_dir: str | Path, predictions: dict | None = None) -> dict:
    """Write results.json, results.md and predictions/<benchmark>.jsonl; returns their paths (as strings)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = dict(results.get("files", {}))
    for name, rows in (predictions or {}).items():
        path = output_dir / "predictions" / f"{name}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        files[f"predictions_{name}"] = str(path)
    files["json"] = str(output_dir / "results.json")
    files["markdown"] = str(output_dir / "results.md")
    results["files"] = files
    Path(files["json"]).write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    Path(files["markdown"]).write_text(markdown_report(results))
    return files
