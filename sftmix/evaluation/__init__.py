"""Evaluation of a trained model: held-out NTP metrics with calibration, and the paper's healthcare benchmarks.

    from sftmix.evaluation import evaluate
    results = evaluate(model, tokenizer, heldout="heldout.jsonl", benchmarks={"medqa": "test.jsonl"},
                       output_dir="outputs/eval")

Modules, one idea each: `config` (EvalConfig), `calibration` (ECE math), `reliability_plot`, `token_scores`
(chunked LM-head scoring), `label_settings` (how training labelled its data, saved with the model), `encoding`
(SFTTrainer's own preparation of held-out data), `heldout`, `sharding` (held-out batches over processes),
`benchmarks` (readers of the published formats, local or on the Hub), `lm_eval_tasks` (the benchmarks as
lm-evaluation-harness tasks, scored by lm-eval), `report`, `runner` (evaluate, evaluate_from_config, load_lm), `cli`
(`sftmix eval`). Imports are lazy: `EvalConfig` loads without torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "EvalConfig": "sftmix.evaluation.config",
    "BENCHMARKS": "sftmix.evaluation.config",
    "evaluate": "sftmix.evaluation.runner",
    "evaluate_from_config": "sftmix.evaluation.runner",
    "run_eval_cli": "sftmix.evaluation.cli",
    "heldout_metrics": "sftmix.evaluation.heldout",
    "load_heldout": "sftmix.evaluation.heldout",
    "HeldoutResult": "sftmix.evaluation.heldout",
    "ReliabilityStats": "sftmix.evaluation.calibration",
    "expected_calibration_error": "sftmix.evaluation.calibration",
    "plot_reliability_diagram": "sftmix.evaluation.reliability_plot",
    "score_label_tokens": "sftmix.evaluation.token_scores",
    "prepare_heldout": "sftmix.evaluation.encoding",
    "LabelSettings": "sftmix.evaluation.label_settings",
    "save_label_settings": "sftmix.evaluation.label_settings",
    "load_label_settings": "sftmix.evaluation.label_settings",
    "LABEL_SETTINGS_FILE": "sftmix.evaluation.label_settings",
    "MultipleChoiceQuestion": "sftmix.evaluation.benchmarks",
    "load_benchmark": "sftmix.evaluation.benchmarks",
    "read_medqa": "sftmix.evaluation.benchmarks",
    "read_medmcqa": "sftmix.evaluation.benchmarks",
    "read_pubmedqa": "sftmix.evaluation.benchmarks",
    "task_config": "sftmix.evaluation.lm_eval_tasks",
    "score_benchmarks": "sftmix.evaluation.lm_eval_tasks",
    "write_report": "sftmix.evaluation.report",
    "load_lm": "sftmix.evaluation.runner",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sftmix.evaluation' has no attribute {name!r}")
