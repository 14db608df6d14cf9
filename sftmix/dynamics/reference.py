"""The reference run: `DynamicsTrainer` (TRL's `SFTTrainer` that also scores its own prepared train dataset: one
class prepares, trains and scores, so all see the SFTMix run's examples) and `CheckpointCallback` (saves C evenly
spaced checkpoints, scored while the engine is live, and a plan file that says whether they are reusable)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback
from trl import SFTTrainer

from sftmix._trl_compat import complete_checkpoints, placeholder_model, prepare_inference_engine, share_deepspeed_state
from sftmix.dynamics.examples import ROW_INDEX, preview
from sftmix.dynamics.scoring import CheckpointScores, score_dataset
from sftmix.response import RESPONSE_MASK, ResponseMaskMixin

logger = logging.getLogger(__name__)

PLAN_FILE = "sftmix_dynamics_plan.json"


# The trainer ------------------------------------------------------------------------------------------------
class DynamicsTrainer(ResponseMaskMixin, SFTTrainer):
    _tag_names = ["trl", "sft", "sftmix-reference"]
    _response_mask_for = frozenset({"train"})

    def __init__(self, model, args, *more, text_as_response: bool = False, **kwargs):
        share_deepspeed_state(args)
        self._text_as_response = text_as_response
        super().__init__(model, args, *more, **kwargs)
        self._inference_engine = None

    def scoring_model(self):
        """What the scoring forward goes through: under DeepSpeed / FSDP the training engine (after `train()`) or
        an inference engine like TRL's DPO precompute; else the plain model (no DDP wrapper without gradients)."""
        if not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            return self.model
        if self.model_wrapped is not self.model:
            return self.model_wrapped
        if self._inference_engine is None:
            self._inference_engine = prepare_inference_engine(self.model, self.accelerator)
        return self._inference_engine

    def score(self, batch_size: int, desc: str = "Scoring", prompt_free: bool = False) -> CheckpointScores:
        """Every example's response perplexity under the current weights (collective: all processes call it); with
        `prompt_free`, also the perplexity of its response alone (the IFD confidence)."""
        return score_dataset(self, batch_size, desc, prompt_free_start(self.processing_class) if prompt_free else None)

    def release(self) -> None:
        """Drop the model and engines so the next checkpoint can be loaded in their place (accelerate's `free_memory`
        then collects them and empties the device cache)."""
        self._inference_engine = None
        self.model = self.model_wrapped = self.deepspeed = None
        self.optimizer = self.lr_scheduler = None
        self.accelerator.free_memory()


def prompt_free_start(tokenizer) -> int:
    """The token the response alone follows in the IFD's prompt-free forward: the tokenizer's BOS (what Cherry LLM's
    tokenization of the answer alone begins with), else its EOS (a document boundary to a model without BOS)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError(
            "`dynamics.confidence: ifd` scores each response alone after the tokenizer's BOS (or EOS) token, and this "
            "tokenizer has neither: set `eos_token` in `training:`, or use `confidence: perplexity`."
        )
    return start


def checkpoint_model(path: str, base_model=None):
    """What to give `DynamicsTrainer` for a saved checkpoint: its path (loaded by SFTTrainer with
    `model_init_kwargs`), or, for a PEFT adapter directory and an in-memory base model, that base with the adapter."""
    if base_model is not None and (Path(path) / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, path, is_trainable=False)
    return str(path)


def detach_adapter(model) -> None:
    """Remove the adapter `checkpoint_model` put on an in-memory base model, restoring its modules."""
    if hasattr(model, "peft_config") and hasattr(model, "unload"):
        model.unload()


# SFTTrainer's preparation -----------------------------------------------------------------------------------
def prepare_examples(indexed_dataset, tokenizer, config, text_as_response: bool = False):
    """`indexed_dataset` (with `ROW_INDEX`) prepared by SFTTrainer under `config` and `tokenizer`, with each example's
    response mask (`RESPONSE_MASK`). Examples with no response token to score (a response truncated away while the
    NTP labels keep the prompt) are left out, like those SFTTrainer drops."""
    prepared = DynamicsTrainer(
        placeholder_model(len(tokenizer)),
        config,
        train_dataset=indexed_dataset,
        processing_class=tokenizer,
        text_as_response=text_as_response,
    ).train_dataset
    return prepared.filter(lambda example: any(example[RESPONSE_MASK][1:]), desc="Keeping examples with a response")


def check_reference_tokenizer(
    indexed, prepared, target_tokenizer, reference_tokenizer, config, example_ids, text_as_response=False
):
    """The reference scores the data with its own tokenizer; if it tokenizes the data differently from the target's
    (compared on the data, not just the vocabularies), it must keep exactly the examples the target will train on:
    the split is joined by content, so another tokenizer can score the data, as the paper's Gemma-2B -> Llama-3.1-8B.
    """
    if target_tokenizer is None or target_tokenizer is reference_tokenizer:
        return
    target = prepare_examples(indexed, target_tokenizer, config, text_as_response)
    columns = [ROW_INDEX, "input_ids", "labels"]
    batches = zip(*(data.select_columns(columns).iter(batch_size=1000) for data in (target, prepared)), strict=True)
    if len(target) == len(prepared) and all(x == y for x, y in batches):
        return
    logger.warning(
        "The reference model's tokenizer tokenizes the training data differently from the target's (vocabulary "
        "sizes %d and %d). Scores come from the reference's tokenization and transfer to the target by example "
        "content, as in the paper's smaller-reference experiment.",
        len(reference_tokenizer),
        len(target_tokenizer),
    )
    target_rows, reference_rows = set(target[ROW_INDEX]), set(prepared[ROW_INDEX])
    if target_rows == reference_rows:
        return
    only_target, only_reference = sorted(target_rows - reference_rows), sorted(reference_rows - target_rows)
    parts = [
        f"{len(rows)} example(s) {what}: {preview(rows, example_ids)}"
        for rows, what in (
            (only_target, "kept for the target but left with no trainable token by the reference's tokenizer"),
            (only_reference, "kept by the reference but dropped for the target"),
        )
        if rows
    ]
    raise ValueError(
        "The reference model's tokenizer differs from the target's and they keep different examples after "
        "tokenization and truncation. " + "; ".join(parts) + ". The split must be made on the same examples the "
        "target trains on: use a reference model that shares the target's tokenizer, raise `max_length`, or remove "
        "these rows from the data."
    )


# Checkpoint plan and callback -------------------------------------------------------------------------------
def checkpoint_steps(max_steps: int, num_checkpoints: int) -> list[int]:
    """C optimizer steps evenly spaced over a run of `max_steps`, the last at its end: round(k x S / C), k = 1..C."""
    if max_steps < num_checkpoints:
        raise ValueError(
            f"The reference run has {max_steps} optimizer step(s), fewer than `num_checkpoints={num_checkpoints}`: "
            "lower `num_checkpoints`, or lengthen the run (`reference_num_train_epochs`, `reference_max_steps`, a "
            "smaller batch)."
        )
    return [int(k * max_steps / num_checkpoints + 0.5) for k in range(1, num_checkpoints + 1)]


def plan_matches(output_dir: str | os.PathLike, key: dict) -> bool:
    """Whether the checkpoints in `output_dir` were planned by a run with the same settings (its plan file's key)."""
    try:
        plan = json.loads((Path(output_dir) / PLAN_FILE).read_text())
    except (OSError, ValueError):  # none yet, or unreadable
        return False
    return plan.get("key") == json.loads(json.dumps(key, default=str))


def resume_point(output_dir: str | os.PathLike, key: dict, scored_steps: list[int]) -> str | None:
    """The latest checkpoint of an interrupted run with the same settings that training can resume from, among
    `scored_steps` (the planned steps up to the first one not scored: those will not run again)."""
    if not plan_matches(output_dir, key):
        return None
    best, complete = None, complete_checkpoints(output_dir)
    for step in scored_steps:
        path = complete.get(step)
        if path is None:
            break
        if (path / "optimizer.pt").is_file() or any(path.glob("global_step*")):  # the optimizer state too: resumable
            best = str(path)
    return best


@dataclass(eq=False)
class CheckpointCallback(TrainerCallback):
    """Save at the planned `steps`, write the plan file (what makes the checkpoints reusable), and call
    `on_checkpoint(step)` on every process after each save."""

    steps: list[int]
    key: dict
    on_checkpoint: Callable[[int], None]

    def on_train_begin(self, args, state, control, **kwargs):
        if args.process_index == 0:
            directory = Path(args.output_dir)
            directory.mkdir(parents=True, exist_ok=True)
            partial = directory / f".{PLAN_FILE}.partial"
            plan = {"steps": self.steps, "max_steps": state.max_steps, "key": self.key}
            partial.write_text(json.dumps(plan, indent=2, sort_keys=True, default=str))
            partial.replace(directory / PLAN_FILE)
        logger.info("Reference run: %d steps, scoring checkpoints at steps %s", state.max_steps, self.steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            self.on_checkpoint(state.global_step)
