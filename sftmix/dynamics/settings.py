"""The `SFTConfig`s the dynamics pass runs under, derived from the SFTMix run's, and the keys that identify them.

The reference run and the scoring pass take tokenization, chat template, label masking, `max_length`, precision
and distribution settings from the SFTMix run's config (an `SFTMixConfig` works: its Mixup fields are dropped);
only what must differ is overridden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

# Settings that change the tokenized examples (and so the scores): part of every cache key
TOKENIZATION_FIELDS = (
    "max_length",
    "truncation_mode",
    "assistant_only_loss",
    "completion_only_loss",
    "chat_template_path",
    "dataset_text_field",
    "eos_token",
    "pad_token",
)
# Settings that change the reference run's weights: part of its checkpoints' key
TRAINING_FIELDS = (
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_ratio",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "seed",
    "data_seed",
    "bf16",
    "fp16",
    "loss_type",
    "shuffle_dataset",
    "neftune_noise_alpha",
)


def default_sft_config(output_dir: str):
    """The SFTConfig used when none is given: TRL's defaults, made runnable on a machine without a GPU."""
    import torch
    from trl import SFTConfig

    return SFTConfig(output_dir, use_cpu=not torch.cuda.is_available(), report_to="none")


def derive(config, **overrides):
    """A plain `SFTConfig` copy of `config` (an SFTConfig or subclass) with `overrides` applied."""
    from trl import SFTConfig

    # Field values as set, not `to_dict()`, which masks every `*_token` field (eos_token, pad_token, hub_token)
    names = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    values = {name: getattr(config, name) for name in names}
    if "gradient_checkpointing" in overrides and "activation_checkpointing" in names:
        # transformers >= 5.2x: the new name wins over its deprecated alias
        overrides = {**overrides, "activation_checkpointing": overrides["gradient_checkpointing"]}
    values.update(overrides)
    return SFTConfig(**values)


def check_per_example(config) -> None:
    if config.packing or config.padding_free:
        raise ValueError(
            "The dynamics pass scores every example on its own, so it cannot run with `packing=True` or "
            "`padding_free=True` (several examples per row). Set both to false (SFTMix needs that anyway)."
        )


def reference_training_config(base, output_dir: Path, dynamics):
    """The reference run: the SFTMix run's settings, saving only where the checkpoint callback says."""
    overrides = dict(
        output_dir=str(output_dir),
        save_strategy="no",  # `CheckpointCallback` triggers the saves
        save_total_limit=None,
        # The optimizer state too, whatever the SFTMix run keeps: an interrupted reference run resumes from it
        save_only_model=False,
        load_best_model_at_end=False,
        eval_strategy="no",
        push_to_hub=False,
    )
    if dynamics.reference_num_train_epochs is not None:
        overrides.update(num_train_epochs=dynamics.reference_num_train_epochs, max_steps=-1)
    if dynamics.reference_max_steps is not None:
        overrides["max_steps"] = dynamics.reference_max_steps
    return derive(base, **overrides)


def scoring_config(base, output_dir: Path):
    """Scoring: no training, no logging integrations, models given as objects (see `loading_config`)."""
    return derive(
        base,
        output_dir=str(output_dir),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        push_to_hub=False,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        model_init_kwargs=None,
    )


def loading_config(scoring, base, load_kwargs: dict):
    """Scoring a checkpoint given by path: SFTTrainer loads it with `load_kwargs` under the run's own kwargs."""
    return derive(scoring, model_init_kwargs={**load_kwargs, **(base.model_init_kwargs or {})})


def tokenizer_hash(tokenizer) -> str:
    blob = json.dumps(
        [sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "chat_template", None)], default=str
    )
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def tokenization_key(config, tokenizer, text_as_response: bool = False) -> dict:
    return {
        "tokenizer": tokenizer_hash(tokenizer),
        "scored_tokens": "text" if text_as_response else "response",
        **{name: getattr(config, name) for name in TOKENIZATION_FIELDS},
    }


def training_key(config, peft_config, reference: str, num_checkpoints: int) -> dict:
    key = {name: getattr(config, name, None) for name in TRAINING_FIELDS}
    key.update(
        reference=reference,
        num_checkpoints=num_checkpoints,
        peft=None if peft_config is None else _peft_summary(peft_config),
    )
    return json.loads(json.dumps(key, default=str))


def _peft_summary(peft_config) -> str:
    to_dict = getattr(peft_config, "to_dict", None)
    return json.dumps(to_dict() if callable(to_dict) else repr(peft_config), sort_keys=True, default=str)
