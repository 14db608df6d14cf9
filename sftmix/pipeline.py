"""The stages a recipe runs: dynamics pass -> SFTMix training -> evaluation, and the summary they print."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def default_scores_path(recipe) -> Path:
    return Path(recipe.training.output_dir) / "dynamics" / "scores.parquet"


def _check_before_loading(recipe) -> None:
    """Everything that can be checked without a model: data sources, settings."""
    recipe.data.check_sources()
    if not recipe.model.model_name_or_path:
        raise ValueError("The recipe names no model: set `model_name_or_path`.")
    if recipe.training.mixup_enabled:
        recipe.training.validate_for_mixup()
    if recipe.evaluation is not None:  # benchmark files are checked now, not after hours of training
        recipe.evaluation.check_sources()


def run_dynamics(recipe):
    """Stage 1: write the scores file (and data map) the training stage reads; returns its path."""
    from sftmix.data import load_sft_data
    from sftmix.dynamics import compute_dynamics
    from sftmix.modeling import load_model_and_tokenizer

    _check_before_loading(recipe)
    dynamics = recipe.dynamics or _default_dynamics()
    if not dynamics.scores_path:
        dynamics.scores_path = str(default_scores_path(recipe))
    train, _ = load_sft_data(recipe.data)
    model, tokenizer, peft_config = load_model_and_tokenizer(recipe.model, recipe.training)
    started = time.perf_counter()
    path = compute_dynamics(
        model,
        train,
        dynamics,
        processing_class=tokenizer,
        sft_args=recipe.training,
        peft_config=peft_config,
    )
    logger.info("Dynamics pass done in %.0f s: %s", time.perf_counter() - started, path)
    recipe.training.dynamics_path = str(path)
    return Path(path)


def _default_dynamics():
    from sftmix.dynamics import DynamicsConfig

    return DynamicsConfig()


def run_train(recipe) -> dict:
    """Stage 2: SFTMix training; saves the model and returns a summary."""
    from sftmix._trl_compat import share_deepspeed_state
    from sftmix.data import load_sft_data
    from sftmix.modeling import load_model_and_tokenizer
    from sftmix.trainer import SFTMixTrainer

    _check_before_loading(recipe)
    args = recipe.training
    if args.mixup_enabled and not args.dynamics_path and default_scores_path(recipe).is_file():
        args.dynamics_path = str(default_scores_path(recipe))
    train, held_out = load_sft_data(recipe.data)
    model, tokenizer, peft_config = load_model_and_tokenizer(recipe.model, args)
    share_deepspeed_state(args)  # after the dynamics stage's trainers, reuse the process's DeepSpeed setup
    trainer = SFTMixTrainer(
        model,
        args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(args.output_dir)
    summary = {
        "model": recipe.model.model_name_or_path,
        "output_dir": args.output_dir,
        "train_examples": len(trainer.train_dataset),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 1),
        "mixup_weight": args.mixup_weight,
    }
    if args.mixup_enabled:
        groups = trainer.train_dataset[args.confidence_column]
        summary["confident_examples"] = int(sum(groups))
        summary["unconfident_examples"] = len(groups) - int(sum(groups))
        logs = [h for h in trainer.state.log_history if "mixup_loss" in h]
        if logs:
            summary.update(
                {
                    k: logs[-1][k]
                    for k in ("ntp_loss", "mixup_loss", "ntp_loss_confident", "ntp_loss_unconfident")
                }
            )
    if held_out is not None:
        summary["eval_loss"] = trainer.evaluate()["eval_loss"]
    if trainer.is_world_process_zero():
        Path(args.output_dir, "sftmix_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_eval(recipe, model_path: str | None = None) -> dict | None:
    """Evaluate the trained model as the recipe's `evaluation:` section says (nothing if it has none)."""
    if recipe.evaluation is None:
        return None
    from sftmix.evaluation import evaluate_from_config

    return evaluate_from_config(model_path or recipe.training.output_dir, recipe.evaluation, recipe.data)


def run_all(recipe) -> dict:
    started = time.perf_counter()
    if recipe.training.mixup_enabled and not recipe.training.dynamics_path:
        run_dynamics(recipe)
    summary = run_train(recipe)
    evaluation = run_eval(recipe)
    if evaluation is not None:
        summary["evaluation"] = evaluation
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    print("\nSFTMix summary")
    rows = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    evaluation = summary.get("evaluation") or {}
    for key, value in (evaluation.get("heldout") or {}).items():
        if isinstance(value, float):
            rows[f"heldout_{key}"] = value
    for name, result in (evaluation.get("benchmarks") or {}).items():
        rows[f"{name}_accuracy"] = result["accuracy"]
    if "files" in evaluation:
        rows["evaluation_report"] = evaluation["files"].get("markdown", "")
    for key, value in rows.items():
        print(f"  {key:24s} {value:.4f}" if isinstance(value, float) else f"  {key:24s} {value}")
