"""The settings of stage 1: `DynamicsConfig` (a recipe's `dynamics:`), the `SFTConfig`s the pass runs under (the
SFTMix run's, only what must differ overridden) and the cache keys. Imports neither torch nor TRL at load time."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from sftmix.logs import reference_run_name


def _field(default, help: str, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class DynamicsConfig:
    """The training-dynamics pass of SFTMix (stage 1; docs/dynamics.md): a plain-NTP reference run scored at
    `num_checkpoints` checkpoints (or the given `checkpoints`); the top `confident_fraction` is the confident subset."""

    scores_path: str | None = _field(
        None,
        "Where to write the scores file (parquet). The data map, the confidence histogram and the "
        "per-checkpoint cache go next to it. `sftmix dynamics` defaults to <output_dir>/_dynamics/scores.parquet.",
    )
    num_checkpoints: int = _field(
        3,
        "Checkpoints C of the reference run to score, evenly spaced over its optimizer steps (the last "
        "one at the end of the run). The paper does not state C.",
    )
    checkpoints: list[str] | None = _field(
        None,
        "Existing checkpoints (model or PEFT adapter directories) to score instead of training a "
        "reference model; `num_checkpoints` is then ignored.",
    )
    reference_model: str | None = _field(
        None,
        "Model (path or Hub id) trained as the reference, with its own tokenizer. Default: the target "
        "model itself. The paper shows a smaller reference's split transfers to a larger target.",
    )
    reference_output_dir: str | None = _field(
        None, "Where the reference run saves its checkpoints. Default: `reference/` next to the scores file."
    )
    reference_num_train_epochs: float | None = _field(
        None,
        "Epochs of the reference run. Default: one epoch, as in the paper's pipeline figure (or the "
        "SFTMix run's length when that is shorter).",
    )
    reference_max_steps: int | None = _field(
        None, "Optimizer steps of the reference run, overriding epochs. Default: one epoch."
    )
    keep_reference_checkpoints: bool = _field(
        False,
        "Keep the reference run's C checkpoints once the scores file is complete (default: delete them; "
        "each is a full checkpoint with optimizer state, ~16 bytes per parameter). Their scores stay cached.",
    )
    mode: str = _field(
        "reference",
        "'reference' (the paper's): a separate reference NTP run supplies the confidence. 'training' "
        "(beyond the paper): the confidence is recorded from the SFTMix run's own training forward, no reference "
        "run and no scoring pass (`SFTMixConfig.training_dynamics`; its warm-up and window are set there). It "
        "replaced the former 'online' mode (a scored NTP warm-up; docs/dynamics.md).",
        choices=["reference", "training"],
    )
    confidence: str = _field(
        "perplexity",
        "'perplexity' (the paper's): confidence = minus the mean response perplexity over the checkpoints. "
        "'ifd' (beyond the paper): minus the mean instruction-following difficulty of Cherry LLM, the response's "
        "perplexity given its prompt divided by its perplexity alone (one more forward per checkpoint, over the "
        "responses without their prompts), which sees whether a response answers its prompt; both are written "
        "to the scores file. Reference mode only.",
        choices=["perplexity", "ifd"],
    )
    split: str = _field(
        "median",
        "'median' (the paper's): the most confident `confident_fraction` of examples form the confident "
        "group. 'random': a random group of the same size (an ablation: does the confidence matter?).",
        choices=["median", "random"],
    )
    split_seed: int = _field(0, "Seed of the random group when `split: random`.")
    confident_fraction: float = _field(
        0.5,
        "Fraction of scored examples put in the confident subset (highest confidence). 0.5 is the "
        "paper's median split; the confident group holds floor(fraction x N) examples.",
    )
    scoring_batch_size: int = _field(
        8, "Examples per device in each scoring forward (no gradients; batches grouped by length)."
    )
    overwrite_cache: bool = _field(
        False,
        "Rescore every checkpoint and retrain the reference model even where cached scores and "
        "checkpoints of an earlier pass exist.",
    )
    plots: bool = _field(True, "Draw the data map and the confidence histogram (PNG) next to the scores file.")
    review_size: int = _field(
        20,
        "The least confident examples listed for review (review.md and review.csv next to the scores "
        "file: example id, row, confidence, variability, a short excerpt of the response, none with "
        "`error_excerpts: false`), where mislabelled or truncated responses tend to be. 0: none.",
    )
    mark_column: str | None = _field(
        None,
        "A boolean column of the training data marking rows known to be bad (e.g. `corrupted` in "
        "`sftmix/quickstart-noisy`), copied into the scores file and the review list and drawn in its own "
        "colour on the data map, so that one can see whether the dynamics find them. Training ignores it.",
    )

    def __post_init__(self):
        if self.mode == "online":
            raise ValueError(
                "`mode: online` was replaced by `mode: training`: the confidence is recorded from the SFTMix run's own "
                "training forward, with no scoring pass and no warm-up checkpoint. Use `mode: training` (its warm-up "
                "is `training_dynamics_warmup_ratio` in `training:`), or `mode: reference` for the paper's."
            )
        lows = {"review_size": 0, "num_checkpoints": 1, "scoring_batch_size": 1, "reference_max_steps": 1}
        for name, low in lows.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"`{name}` must be >= {low}, got {value}.")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(
                    f"`{f.name}` must be {' or '.join(map(repr, choices))}, got {getattr(self, f.name)!r}."
                )
        if not 0.0 < self.confident_fraction < 1.0:
            raise ValueError(
                f"`confident_fraction` must lie strictly between 0 and 1 (0.5 = median split), got "
                f"{self.confident_fraction}."
            )
        if self.mode == "training" and (self.checkpoints or self.reference_model):
            raise ValueError(
                f"`mode: {self.mode}` scores the SFTMix run's own training: it cannot use `checkpoints` or "
                "`reference_model`. Remove them, or use `mode: reference`."
            )
        if self.mode == "training" and self.confidence == "ifd":
            raise ValueError(
                "`confidence: ifd` needs the perplexity of each response without its prompt, a forward the training "
                "step does not run: use it with `mode: reference` (one more scoring forward per checkpoint), or keep "
                "`confidence: perplexity` with `mode: training`."
            )
        if self.mode == "training" and self.split == "random":
            raise ValueError(
                "`split: random` draws the groups by a seeded permutation, with nothing recorded: use it with "
                "`mode: reference` (no reference run is made for it), or keep `split: median` with `mode: training`."
            )
        if self.checkpoints is not None:
            if isinstance(self.checkpoints, str):
                self.checkpoints = [self.checkpoints]
            if not self.checkpoints:
                raise ValueError("`checkpoints` is an empty list: name at least one model, or leave it unset.")
            self.checkpoints = [str(c) for c in self.checkpoints]


# Settings that change the tokenized examples (and so the scores): part of every cache key
TOKENIZATION_FIELDS = tuple(
    "max_length truncation_mode assistant_only_loss completion_only_loss chat_template_path dataset_text_field "
    "eos_token pad_token".split()
)
# Settings that change the reference run's weights: part of its checkpoints' key
TRAINING_FIELDS = tuple(
    "learning_rate weight_decay adam_beta1 adam_beta2 adam_epsilon max_grad_norm optim lr_scheduler_type "
    "lr_scheduler_kwargs warmup_ratio warmup_steps num_train_epochs max_steps per_device_train_batch_size "
    "gradient_accumulation_steps world_size seed data_seed bf16 fp16 loss_type shuffle_dataset "
    "neftune_noise_alpha".split()
)


def derive(config, **overrides):
    """A plain `SFTConfig` copy of `config` (an SFTConfig or subclass) with `overrides` applied."""
    from trl import SFTConfig

    # Field values as set, not `to_dict()`, which masks every `*_token` field (eos_token, pad_token, hub_token)
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(SFTConfig) if f.init}
    return SFTConfig(**{**values, **overrides})


def reference_dir(dynamics, scores_path) -> Path:
    """Where the reference run writes its checkpoints."""
    return Path(dynamics.reference_output_dir or Path(scores_path).parent / "reference")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def optimizer_steps(num_examples: int, args, epochs: float | None = None) -> int:
    """Optimizer steps of a run over `num_examples`, as `transformers.Trainer` counts them (its
    `set_initial_training_values`: a partial last accumulation group rounds up): `args.max_steps` when positive
    and `epochs` is not given. The one count of the dynamics pass, the training mode and `sftmix check`."""
    if epochs is None and args.max_steps is not None and args.max_steps > 0:
        return args.max_steps
    processes = getattr(args, "world_size", None) or world_size()
    batches = math.ceil(num_examples / (args.per_device_train_batch_size * processes))
    per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    return math.ceil(per_epoch * (args.num_train_epochs if epochs is None else epochs))


def reference_steps(base, dynamics, num_examples: int) -> int:
    """Optimizer steps of the reference run: `reference_max_steps`, else `reference_num_train_epochs`, else one
    epoch (the paper's figure) capped by the SFTMix run's own length. `sftmix check` prints the same number."""
    if dynamics.reference_max_steps is not None:
        return dynamics.reference_max_steps
    if dynamics.reference_num_train_epochs is not None:
        return optimizer_steps(num_examples, base, dynamics.reference_num_train_epochs)
    return min(optimizer_steps(num_examples, base, 1.0), optimizer_steps(num_examples, base))


def reference_training_config(base, output_dir: Path, dynamics, num_examples: int):
    """The reference run: the SFTMix run's settings, `reference_steps` long, saving where `CheckpointCallback` says."""
    return derive(
        base,
        output_dir=str(output_dir),
        save_strategy="no",  # `CheckpointCallback` triggers the saves
        save_total_limit=None,
        # The optimizer state too, whatever the SFTMix run keeps: an interrupted reference run resumes from it
        save_only_model=False,
        load_best_model_at_end=False,
        eval_strategy="no",
        push_to_hub=False,
        max_steps=reference_steps(base, dynamics, num_examples),
        run_name=reference_run_name(base.run_name),  # its own run in the trackers, same group
    )


def scoring_config(base, output_dir: Path):
    """Scoring: no training, no logging integrations, models given as objects (`model_init_kwargs` unset)."""
    return derive(
        base,
        output_dir=str(output_dir),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        push_to_hub=False,
        activation_checkpointing=False,
        shuffle_dataset=False,
        model_init_kwargs=None,
    )


def data_key(example_ids: list[str], config, tokenizer, text_as_response: bool = False) -> dict:
    """What scores were made for: the ordered example ids (`data`, the scores file's `dataset_fingerprint`) and how
    they were tokenized (the rest, its `tokenization`); part of every cache key."""
    ids = "".join(f"{eid}\n" for eid in example_ids).encode("ascii")
    blob = json.dumps([sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "chat_template", None)], default=str)
    return {
        "data": hashlib.sha1(ids).hexdigest()[:16],
        "tokenizer": hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16],
        "scored_tokens": "text" if text_as_response else "response",
        **{name: getattr(config, name) for name in TOKENIZATION_FIELDS},
    }


def training_key(config, peft_config, reference: str, num_checkpoints: int) -> dict:
    key = {name: getattr(config, name, None) for name in TRAINING_FIELDS}
    peft = None
    if peft_config is not None:
        to_dict = getattr(peft_config, "to_dict", None)
        peft = json.dumps(to_dict() if callable(to_dict) else repr(peft_config), sort_keys=True, default=str)
    key.update(reference=reference, num_checkpoints=num_checkpoints, peft=peft)
    return json.loads(json.dumps(key, default=str))
