"""Evaluation of a trained model: held-out NTP metrics with calibration, and the paper's healthcare benchmarks.

    from sftmix.evaluation import evaluate
    results = evaluate(model, tokenizer, heldout="heldout.jsonl", benchmarks={"medqa": "test.jsonl"},
                       output_dir="outputs/eval")

Modules, one idea each: `config` (EvalConfig), `calibration` (ECE math), `reliability_plot`, `label_settings` (how
training labelled its data, saved with the model), `heldout` (held-out loss, accuracy and calibration on training's
own preparation, scored chunk by chunk through the LM head, batches shared over processes), `benchmarks` (readers
of the published formats, local or on the Hub), `lm_eval_tasks` (the benchmarks as lm-evaluation-harness tasks,
scored by lm-eval), `report`, `runner` (evaluate, evaluate_from_config, load_lm), `cli` (`sftmix eval`).
Imports are lazy: `EvalConfig` loads without torch.
"""

from __future__ import annotations

import importlib

_LAZY = {  # the public names; everything else is imported from its module
    "EvalConfig": "sftmix.evaluation.config",
    "BENCHMARKS": "sftmix.evaluation.config",
    "evaluate": "sftmix.evaluation.runner",
    "evaluate_from_config": "sftmix.evaluation.runner",
    "load_lm": "sftmix.evaluation.runner",
    "run_eval_cli": "sftmix.evaluation.cli",
    "heldout_metrics": "sftmix.evaluation.heldout",
    "expected_calibration_error": "sftmix.evaluation.calibration",
    "plot_reliability_diagram": "sftmix.evaluation.reliability_plot",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sftmix.evaluation' has no attribute {name!r}")
