"""`SFTMixConfig`: TRL's `SFTConfig` plus the SFTMix settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

LAMBDA_SAMPLING = ("pair", "batch")


@dataclass
class SFTMixConfig(SFTConfig):
    r"""
    Configuration for [`SFTMixTrainer`]: every [`~trl.SFTConfig`] field, plus the settings of the Mixup
    regulariser of SFTMix (Xiao et al., arXiv 2410.05248). Defaults follow the paper.

    The training loss is `NTP + mixup_weight * Mixup`, where Mixup is the cross-entropy of the LM head at
    last-layer hidden states interpolated between a confident and an unconfident example, against the
    equally interpolated one-hot targets. Both terms are per-token means over the global batch.
    """

    mixup_alpha: float = field(
        default=0.5,
        metadata={
            "help": "Mixup interpolation weights are drawn as lambda ~ Beta(alpha, alpha). Paper: 0.5."
        },
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

    def __post_init__(self):
        super().__post_init__()
        if self.mixup_alpha <= 0:
            raise ValueError(f"`mixup_alpha` must be > 0 (Beta(alpha, alpha)), got {self.mixup_alpha}.")
        if self.mixup_weight < 0:
            raise ValueError(f"`mixup_weight` must be >= 0, got {self.mixup_weight}.")
        if self.mixup_lambda is not None and not 0.0 <= self.mixup_lambda <= 1.0:
            raise ValueError(
                f"`mixup_lambda` must lie in [0, 1] or be None (sample it), got {self.mixup_lambda}."
            )
        if self.mixup_lambda_sampling not in LAMBDA_SAMPLING:
            raise ValueError(
                f"`mixup_lambda_sampling` must be one of {LAMBDA_SAMPLING}, got {self.mixup_lambda_sampling!r}."
            )
        if self.mixup_chunk_size < 1:
            raise ValueError(f"`mixup_chunk_size` must be >= 1, got {self.mixup_chunk_size}.")
        if self.mixup_weight > 0:
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
        if self.label_smoothing_factor > 0:
            raise ValueError(
                "`label_smoothing_factor` > 0 is not supported with SFTMix: the Mixup term already uses soft "
                "targets. Set it to 0."
            )
