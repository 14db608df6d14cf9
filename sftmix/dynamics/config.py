"""`DynamicsConfig`: the settings of stage 1 (reference run, scoring, split), parsable from a recipe's `dynamics:`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DynamicsConfig:
    r"""
    Configuration of the training-dynamics pass of SFTMix (stage 1).

    A reference model is trained with plain next-token prediction on the training data (the same tokenization,
    chat template, label masking and `max_length` as the SFTMix run, taken from the `SFTConfig` given alongside)
    and `num_checkpoints` checkpoints are kept, evenly spaced over the run. At every checkpoint each example's
    response perplexity is computed; confidence is minus its mean over checkpoints, and the top
    `confident_fraction` of examples form the confident subset. Alternatively, `checkpoints` lists existing
    models or adapters to score without training.
    """

    scores_path: str | None = field(
        default=None,
        metadata={
            "help": "Where to write the scores file (parquet). The data map, the confidence histogram and the "
            "per-checkpoint cache go next to it. `sftmix dynamics` defaults to <output_dir>/dynamics/scores.parquet."
        },
    )
    num_checkpoints: int = field(
        default=3,
        metadata={
            "help": "Checkpoints C of the reference run to score, evenly spaced over its optimizer steps (the last "
            "one at the end of the run). The paper does not state C."
        },
    )
    checkpoints: list[str] | None = field(
        default=None,
        metadata={
            "help": "Existing checkpoints (model or PEFT adapter directories) to score instead of training a "
            "reference model; `num_checkpoints` is then ignored."
        },
    )
    reference_model: str | None = field(
        default=None,
        metadata={
            "help": "Model (path or Hub id) trained as the reference, with its own tokenizer. Default: the target "
            "model itself. The paper shows a smaller reference's split transfers to a larger target."
        },
    )
    reference_output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the reference run saves its checkpoints. Default: `reference/` next to the scores file."
        },
    )
    reference_num_train_epochs: float | None = field(
        default=None,
        metadata={
            "help": "Epochs of the reference run. Default: those of the SFTMix run (`num_train_epochs`)."
        },
    )
    reference_max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps of the reference run, overriding epochs. Default: those of the SFTMix run."
        },
    )
    confident_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of scored examples put in the confident subset (highest confidence). 0.5 is the "
            "paper's median split; the confident group holds floor(fraction x N) examples."
        },
    )
    scoring_batch_size: int = field(
        default=8,
        metadata={
            "help": "Examples per device in each scoring forward (no gradients; batches grouped by length)."
        },
    )
    overwrite_cache: bool = field(
        default=False,
        metadata={
            "help": "Rescore every checkpoint and retrain the reference model even where cached scores and "
            "checkpoints of an earlier pass exist."
        },
    )
    plots: bool = field(
        default=True,
        metadata={"help": "Draw the data map and the confidence histogram (PNG) next to the scores file."},
    )

    def __post_init__(self):
        if self.num_checkpoints < 1:
            raise ValueError(f"`num_checkpoints` must be >= 1, got {self.num_checkpoints}.")
        if not 0.0 < self.confident_fraction < 1.0:
            raise ValueError(
                f"`confident_fraction` must lie strictly between 0 and 1 (0.5 = median split), got "
                f"{self.confident_fraction}."
            )
        if self.scoring_batch_size < 1:
            raise ValueError(f"`scoring_batch_size` must be >= 1, got {self.scoring_batch_size}.")
        if self.checkpoints is not None:
            if isinstance(self.checkpoints, str):
                self.checkpoints = [self.checkpoints]
            if not self.checkpoints:
                raise ValueError(
                    "`checkpoints` is an empty list: name at least one model, or leave it unset."
                )
            self.checkpoints = [str(c) for c in self.checkpoints]
        if self.reference_max_steps is not None and self.reference_max_steps < 1:
            raise ValueError(f"`reference_max_steps` must be >= 1, got {self.reference_max_steps}.")
