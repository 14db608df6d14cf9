"""`SFTMixConfig`: TRL's `SFTConfig` plus the SFTMix settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from sftmix.mixup import TILE_ELEMENTS

LAMBDA_SAMPLING = ("pair", "batch")
ALIGNMENTS = ("response", "turn")


@dataclass
class SFTMixConfig(SFTConfig):
    """Configuration for [`SFTMixTrainer`]: every [`~trl.SFTConfig`] field plus the settings of the SFTMix Mixup
    regulariser (Xiao et al., arXiv 2410.05248), with the paper's defaults. The training loss is
    `NTP + mixup_weight * Mixup`; what each term covers and how it is normalised: docs/choices.md.
    Every Mixup setting is checked here, once, when the config is built."""

    assistant_only_loss: bool | None = field(
        default=None,
        metadata={
            "help": "Whether the NTP loss covers only the assistant turns of conversational data. SFTMix default "
            "None: True for conversational data (the paper trains NTP on responses), False otherwise. The Mixup "
            "term covers the responses whatever this is."
        },
    )

    # TRL's default (activation checkpointing on) under transformers 5's name (set in __post_init__): SFTConfig's own
    # default sets the deprecated alias and so warns on every run; `gradient_checkpointing` still works as an alias.
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass to save memory (was `gradient_checkpointing`)."},
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing` (transformers 5)."},
    )
    mixup_alpha: float = field(
        default=0.5,
        metadata={"help": "Mixup interpolation weights are drawn as lambda ~ Beta(alpha, alpha). Paper: 0.5."},
    )
    mixup_weight: float = field(
        default=0.2,
        metadata={
            "help": "Weight mu of the Mixup loss: loss = NTP + mu * Mixup. Paper: 0.2. With 0, training is plain "
            "SFTTrainer NTP (same sampler, same losses) and no confidence information is needed."
        },
    )
    mixup_lambda: float | None = field(
        default=None,
        metadata={"help": "Fix lambda to this value in [0, 1] instead of sampling it (ablations and tests)."},
    )
    mixup_lambda_sampling: str = field(
        default="pair",
        metadata={
            "help": "How lambda is drawn: 'pair' (one per confident/unconfident pair, default; the paper does not "
            "say) or 'batch' (one per micro-batch, shared by its pairs).",
            "choices": list(LAMBDA_SAMPLING),
        },
    )
    confidence_column: str = field(
        default="confident",
        metadata={
            "help": "Boolean column of the train dataset: True for the confident subset, False for the "
            "unconfident one. Filled from `dynamics_path` when that is given."
        },
    )
    dynamics_path: str | None = field(
        default=None,
        metadata={
            "help": "Scores file written by `sftmix dynamics` (parquet). Joined to the train dataset by example "
            "content, it fills `confidence_column`."
        },
    )
    mixup_chunk_size: int = field(
        default=1024,
        metadata={
            "help": "Mixed positions projected through the LM head at once; bounds the Mixup term's logits "
            "memory to chunk x vocabulary."
        },
    )
    mixup_tile_elements: int = field(
        default=TILE_ELEMENTS,
        metadata={
            "help": "Elements of each transient tile of the Mixup head (positions x vocabulary slice; a slice of "
            "the head and its fp32 gradient): 2**23 (32 MiB in fp32) keeps the Mixup term's memory within "
            "plain SFT's. On GPUs 2**25 is faster (fewer, larger GEMMs: 1.09x plain SFT's step time instead of "
            "1.49x on a 1B model with a 128k head, H200) at up to ~0.3 GB more transient memory."
        },
    )

    mixup_alignment: str = field(
        default="response",
        metadata={
            "help": "How the response positions of a confident and an unconfident example are aligned: 'response' "
            "(default; all response tokens of each example in order, as one sequence Z of the paper's N x d, truncated "
            "to the shorter) or 'turn' (assistant turn i with assistant turn i, each pair truncated to the shorter "
            "turn; turns beyond the shorter conversation are not mixed).",
            "choices": list(ALIGNMENTS),
        },
    )
    mixup_text_as_response: bool = field(
        default=False,
        metadata={
            "help": "Plain-text (`text`) data has no response: with True, every token of the text is mixed and scored "
            "as response; with False (default), such data is refused with the formats that work."
        },
    )

    drop_least_confident: float = field(
        default=0.0,
        metadata={
            "help": "Train without the least confident fraction of the examples scored in `dynamics_path` (data "
            "selection by the same scores, beyond the paper: 'mix or drop?'). Works with `mixup_weight: 0` (plain "
            "NTP on the rest). 0: keep every example."
        },
    )
    training_dynamics: bool = field(
        default=False,
        metadata={
            "help": "Record each example's confidence from the training forward itself instead of reading a split "
            "(beyond the paper; recipe `dynamics.mode: training`; docs/choices.md, 'Training mode'): no reference "
            "run, no scoring pass; the scores file is written at the end (`sftmix.training_dynamics`)."
        },
    )
    training_dynamics_warmup_ratio: float = field(
        default=0.25,
        metadata={
            "help": "`training_dynamics`, runs shorter than two epochs: the fraction of the optimizer steps trained "
            "with plain NTP (and recorded) before the first Mixup step."
        },
    )
    training_dynamics_window: int | None = field(
        default=None,
        metadata={
            "help": "`training_dynamics`, runs shorter than two epochs: the in-batch threshold is the median mean "
            "response NLL of the examples trained on in the last this many optimizer steps (it follows the model "
            "as it learns). Default: the warm-up's length."
        },
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an `output_dir` that holds checkpoints of an earlier run (they are overwritten). "
            "Without it such a run stops with an error unless it resumes (`resume_from_checkpoint`)."
        },
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True  # TRL's default, without its deprecation warning
        super().__post_init__()
        if self.mixup_alpha <= 0:
            raise ValueError(f"`mixup_alpha` must be > 0 (Beta(alpha, alpha)), got {self.mixup_alpha}.")
        if self.mixup_weight < 0:
            raise ValueError(f"`mixup_weight` must be >= 0, got {self.mixup_weight}.")
        if self.mixup_lambda is not None and not 0.0 <= self.mixup_lambda <= 1.0:
            raise ValueError(f"`mixup_lambda` must lie in [0, 1] or be None (sample it), got {self.mixup_lambda}.")
        if self.mixup_lambda_sampling not in LAMBDA_SAMPLING:
            raise ValueError(
                f"`mixup_lambda_sampling` must be one of {LAMBDA_SAMPLING}, got {self.mixup_lambda_sampling!r}."
            )
        if self.mixup_alignment not in ALIGNMENTS:
            raise ValueError(f"`mixup_alignment` must be one of {ALIGNMENTS}, got {self.mixup_alignment!r}.")
        if self.mixup_chunk_size < 1:
            raise ValueError(f"`mixup_chunk_size` must be >= 1, got {self.mixup_chunk_size}.")
        if self.mixup_tile_elements < 256:
            raise ValueError(f"`mixup_tile_elements` must be >= 256, got {self.mixup_tile_elements}.")
        if not 0.0 < self.training_dynamics_warmup_ratio < 1.0:
            raise ValueError(
                "`training_dynamics_warmup_ratio` must lie strictly between 0 and 1, got "
                f"{self.training_dynamics_warmup_ratio}."
            )
        if self.training_dynamics_window is not None and self.training_dynamics_window < 1:
            raise ValueError(f"`training_dynamics_window` must be >= 1, got {self.training_dynamics_window}.")
        if not 0.0 <= self.drop_least_confident < 1.0:
            raise ValueError(f"`drop_least_confident` must lie in [0, 1), got {self.drop_least_confident}.")
        if self.drop_least_confident > 0 and not self.dynamics_path:
            raise ValueError(
                "`drop_least_confident` drops examples by the scores of `dynamics_path`: set `dynamics_path` to a "
                "scores file (`sftmix dynamics`), or remove the setting."
            )
        if self.training_dynamics and not self.mixup_enabled:
            raise ValueError(
                "`training_dynamics` records the confidence the Mixup term pairs by; with `mixup_weight: 0` there is "
                "none. Set `mixup_weight` > 0 or `training_dynamics: false`."
            )
        if self.training_dynamics and self.dynamics_path:
            raise ValueError(
                f"`training_dynamics` records the split during training, and `dynamics_path` ({self.dynamics_path}) "
                "gives one: set only one of them."
            )
        if self.mixup_enabled:
            self.validate_for_mixup()

    @property
    def mixup_enabled(self) -> bool:
        return self.mixup_weight > 0

    def validate_for_mixup(self) -> None:
        """Settings that cannot work with per-example pairing: a clear error before anything loads."""
        if self.packing:
            raise ValueError(
                "`packing=True` concatenates examples into shared rows, so SFTMix cannot pair a confident with an "
                "unconfident example. Set `packing: false` (or `mixup_weight: 0` for plain SFT)."
            )
        if self.padding_free:
            raise ValueError(
                "`padding_free=True` flattens the batch into one row, so SFTMix cannot pair examples. Set "
                "`padding_free: false` (or `mixup_weight: 0` for plain SFT)."
            )
        if self.per_device_train_batch_size % 2:
            raise ValueError(
                f"`per_device_train_batch_size` is {self.per_device_train_batch_size}; SFTMix needs an even number "
                "(half confident, half unconfident examples in every micro-batch)."
            )
        if self.train_sampling_strategy != "random":
            raise ValueError(
                f"`train_sampling_strategy={self.train_sampling_strategy!r}` is not honoured with SFTMix: its own "
                "sampler builds every micro-batch from k confident and k unconfident examples in random pairs. Remove "
                "the setting (or set `mixup_weight: 0` for plain SFT with that sampler)."
            )
        for name in ("split_batches", "dispatch_batches"):  # (`TrainingArguments` made it an `AcceleratorConfig`)
            if getattr(self.accelerator_config, name, None):
                raise ValueError(
                    f"`accelerator_config.{name}=True` splits each batch across processes, which would separate a "
                    "confident example from its unconfident partner. Remove it: SFTMix's sampler gives every process "
                    "whole micro-batches of pairs."
                )
        if self.label_smoothing_factor > 0:
            raise ValueError(
                "`label_smoothing_factor` > 0 is not supported with SFTMix: the Mixup term already uses soft "
                "targets. Set it to 0."
            )
