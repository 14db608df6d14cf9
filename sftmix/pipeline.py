"""The stages a recipe runs: dynamics pass -> SFTMix training -> evaluation, and the summary they print."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def scores_path(recipe) -> Path:
    """The scores file of this run's dynamics pass: `dynamics.scores_path`, else <output_dir>/_dynamics/."""
    from sftmix.scores import default_scores_path

    return default_scores_path(recipe.training.output_dir, recipe.dynamics and recipe.dynamics.scores_path)


_TRUE = ("true", "yes", "1", "latest")
_FALSE = ("false", "no", "0", "none", "")


def wants_resume(args) -> bool:
    """Whether `resume_from_checkpoint` is set (a path, or `true` / "true" for the latest checkpoint)."""
    value = getattr(args, "resume_from_checkpoint", None)
    return value not in (None, False) and str(value).strip().lower() not in _FALSE


def resume_checkpoint(args) -> str | None:
    """The checkpoint `resume_from_checkpoint` names: its path, the latest complete checkpoint in `output_dir` for
    `true`, or None (start at step 0; also for `true` when no checkpoint was saved yet, e.g. a run pre-empted in
    its dynamics pass or before its first save). The reference run's checkpoints (in `_dynamics/`) are not these."""
    from sftmix._trl_compat import complete_checkpoints

    if not wants_resume(args):
        return None
    value = args.resume_from_checkpoint
    if str(value).strip().lower() in _TRUE:  # (True too)
        found = list(complete_checkpoints(args.output_dir).values())
        if not found:
            logger.warning(
                "`resume_from_checkpoint` is set but %s holds no complete checkpoint yet: training starts at step 0.",
                args.output_dir,
            )
            return None
        logger.info("Resuming training from %s", found[-1])
        return str(found[-1])
    path = Path(str(value))
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"`resume_from_checkpoint={value}` is not a complete checkpoint directory (no trainer_state.json "
            "in it). Give a `checkpoint-N` directory of an earlier run, or `true` for the latest one "
            "in `output_dir`."
        )
    return str(path)


def check_output_dir(args) -> None:
    """Never overwrite an earlier run's checkpoints silently.

    `output_dir` holding `checkpoint-N` directories of an earlier run is an error unless the run resumes
    (`resume_from_checkpoint`) or opts out (`overwrite_output_dir: true`). A finished run that kept no
    checkpoint (only the final model, `save_strategy: "no"`) is overwritten: it has nothing to resume from.
    """
    from sftmix._trl_compat import complete_checkpoints

    if wants_resume(args) or getattr(args, "overwrite_output_dir", False):
        return
    found = list(complete_checkpoints(args.output_dir).values())
    if found:
        names = ", ".join(p.name for p in found[-3:])
        raise FileExistsError(
            f"{args.output_dir} already holds checkpoints of an earlier run ({names}). Continue that run with "
            "`--resume_from_checkpoint true` (or the path of one checkpoint), start over in it with "
            "`--overwrite_output_dir true` (its checkpoints are then overwritten), or choose another `output_dir`."
        )


def run_dynamics(recipe):
    """Stage 1: write the scores file (and data map) the training stage reads; returns its path."""
    from sftmix.checks import check_recipe, checked_data
    from sftmix.dynamics import DynamicsConfig, compute_dynamics
    from sftmix.logs import group_tracking_runs
    from sftmix.modeling import load_model_and_tokenizer

    check_recipe(recipe)
    if recipe.training.training_dynamics:
        raise ValueError(
            "`dynamics.mode: training` records the confidence inside the SFTMix run: there is no separate dynamics "
            "pass. Run `sftmix train` or `sftmix run` with this recipe, or choose `mode: reference` for a scores file "
            "of its own."
        )
    group_tracking_runs(recipe.training)
    dynamics = recipe.dynamics or DynamicsConfig()
    dynamics.scores_path = str(scores_path(recipe))
    train, _ = checked_data(recipe.data, dynamics)
    model, tokenizer, peft_config = load_model_and_tokenizer(recipe.model, recipe.training)
    started = time.perf_counter()
    path = compute_dynamics(
        model,
        train,
        dynamics,
        processing_class=tokenizer,
        sft_args=recipe.training,
        peft_config=peft_config,
        restore_model=False,  # this model object is dropped; training loads the model afresh
    )
    del model
    logger.info("Dynamics pass done in %.0f s: %s", time.perf_counter() - started, path)
    recipe.training.dynamics_path = str(path)
    return Path(path)


def run_train(recipe, held_out_evaluated_later: bool = False) -> dict:
    """Stage 2: SFTMix training; saves the model and its card and returns a summary.

    The summary's `eval_loss` (the held-out split through `trainer.evaluate()`) is left out when the evaluation
    stage that follows scores the same split (`held_out_evaluated_later`): its `heldout` loss is the same number.
    """
    from sftmix._trl_compat import share_deepspeed_state
    from sftmix.checks import check_recipe, checked_data
    from sftmix.evaluation.label_settings import save_label_settings
    from sftmix.logs import group_tracking_runs
    from sftmix.modeling import load_model_and_tokenizer
    from sftmix.trainer import SFTMixTrainer

    check_recipe(recipe)
    args = recipe.training
    check_output_dir(args)
    resume = resume_checkpoint(args)
    group_tracking_runs(args)
    recording = args.training_dynamics  # the scores file is this run's output, not its input
    if args.mixup_enabled and not recording and not args.dynamics_path and scores_path(recipe).is_file():
        args.dynamics_path = str(scores_path(recipe))
    logger.info(
        "SFTMix training (mixup_weight %s)%s",
        args.mixup_weight,
        ", confidence recorded from the training forward (dynamics.mode: training)"
        if recording
        else (f", split from {args.dynamics_path}" if args.mixup_enabled and args.dynamics_path else ""),
    )
    train, held_out = checked_data(recipe.data, recipe.dynamics)
    model, tokenizer, peft_config = load_model_and_tokenizer(recipe.model, args)
    share_deepspeed_state(args)  # after the dynamics stage's trainers, reuse the process's DeepSpeed setup
    trainer = SFTMixTrainer(
        model,
        args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=peft_config,
        dynamics=recipe.dynamics,
    )
    started = time.perf_counter()
    # Hub pushes (`push_to_hub: true`) skip `_dynamics/` and checkpoints (transformers skips `_*`)
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json: the log history (learning curves) beside the model
    save_label_settings(
        trainer.args,
        args.output_dir,
        tokenizer=trainer.processing_class,
        completion_only_loss=trainer.completion_only_loss,
    )
    trainer.create_model_card()  # the SFTMix card (sftmix.model_card)
    if trainer.is_world_process_zero():
        remove_reference_checkpoints(recipe)
        logger.info("Model saved to %s", args.output_dir)
    summary = {
        "model": recipe.model.model_name_or_path,
        "output_dir": args.output_dir,
        "train_examples": len(trainer.train_dataset),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 1),
        "mixup_weight": args.mixup_weight,
    }
    if recording:
        from sftmix.scores import read_scores

        if trainer.is_world_process_zero():
            _log_dynamics_outputs(trainer.training_dynamics_path)
        groups = read_scores(trainer.training_dynamics_path)[0]["confident"]
    elif args.mixup_enabled:
        groups = trainer.train_dataset[args.confidence_column]
    if args.mixup_enabled:
        summary["confident_examples"] = int(sum(groups))
        summary["unconfident_examples"] = len(groups) - int(sum(groups))
        logger.info(
            "Split %s: %d confident, %d unconfident examples",
            "recorded in training" if recording else "used in training",
            summary["confident_examples"],
            summary["unconfident_examples"],
        )
        logs = [h for h in trainer.state.log_history if "mixup_loss" in h]
        if logs:
            summary.update(
                {k: logs[-1][k] for k in ("ntp_loss", "mixup_loss", "ntp_loss_confident", "ntp_loss_unconfident")}
            )
            summary["mixed_tokens_per_step"] = sum(h["mixed_tokens"] for h in logs) / len(logs)
    if held_out is not None and not held_out_evaluated_later:
        summary["eval_loss"] = trainer.evaluate()["eval_loss"]
    if trainer.is_world_process_zero():
        path = Path(args.output_dir, "sftmix_summary.json")
        path.write_text(json.dumps(summary, indent=2))
        logger.info("Training summary written to %s", path)
    return summary


def remove_reference_checkpoints(recipe) -> None:
    """After training: delete the reference run's checkpoints of this run's own dynamics pass, unless
    `keep_reference_checkpoints`. The dynamics pass already deletes what it scored; doing it again here, whatever
    was left, makes a run killed between the scores file and that deletion and then resumed leave what an
    uninterrupted run leaves. Checkpoints of a scores file from elsewhere are not touched."""
    from transformers.trainer_utils import sort_checkpoints

    from sftmix.dynamics import DynamicsConfig
    from sftmix.dynamics.compute import remove_checkpoints
    from sftmix.dynamics.config import reference_dir

    dynamics = recipe.dynamics or DynamicsConfig()
    if dynamics.keep_reference_checkpoints:
        return
    own = scores_path(recipe)
    dynamics_path = recipe.training.dynamics_path
    if not dynamics.checkpoints and dynamics_path and Path(dynamics_path).resolve() == own.resolve():
        remove_checkpoints(sort_checkpoints(str(reference_dir(dynamics, own))))


def run_eval(recipe) -> dict | None:
    """Evaluate the trained model as the recipe's `evaluation:` section says (nothing if it has none)."""
    if recipe.evaluation is None:
        return None
    from accelerate import PartialState

    from sftmix.evaluation import evaluate_from_config

    PartialState().wait_for_everyone()  # every process loads the model the main one has just saved
    return evaluate_from_config(recipe.training.output_dir, recipe.evaluation, recipe.data)


def run_all(recipe) -> dict:
    from sftmix.logs import finish_tracking_run, group_tracking_runs

    started = time.perf_counter()
    args = recipe.training
    check_output_dir(args)  # before the dynamics pass, not after it
    group_tracking_runs(args)  # before the reference run, so that it is `<run_name>-reference`
    if args.training_dynamics:
        logger.info("Stage 1/3: dynamics recorded during training (dynamics.mode: training): no separate pass")
    elif args.mixup_enabled and not args.dynamics_path:
        scores = scores_path(recipe)  # written atomically at the very end of the pass
        if wants_resume(args) and scores.is_file():
            logger.info("Resuming: the dynamics pass is done, training reads %s", scores)
            args.dynamics_path = str(scores)
        else:  # resumes by itself: reuses the reference run's scored checkpoints or continues that run
            logger.info("Stage 1/3: dynamics pass (reference run, then scoring its checkpoints)")
            scores = run_dynamics(recipe)
            finish_tracking_run()  # the reference run's tracker run ends here; training opens its own
            _log_dynamics_outputs(scores)
    logger.info("Stage 2/3: SFTMix training")
    summary = run_train(
        recipe, held_out_evaluated_later=recipe.evaluation is not None and recipe.evaluation.heldout_split
    )
    if recipe.evaluation is not None:
        logger.info("Stage 3/3: evaluation")
    evaluation = run_eval(recipe)
    if evaluation is not None:
        summary["evaluation"] = evaluation
        files = evaluation.get("files") or {}
        for kind in ("markdown", "json"):
            if kind in files:
                logger.info("Evaluation report written to %s", files[kind])
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


def _log_dynamics_outputs(scores) -> None:
    from sftmix.model_card import data_map_path

    if scores is None:
        return
    logger.info("Scores file: %s", scores)
    if data_map_path(scores).is_file():
        logger.info("Data map: %s", data_map_path(scores))
