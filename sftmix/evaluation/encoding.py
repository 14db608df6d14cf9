"""Held-out examples tokenised and labelled by TRL's own SFTTrainer preparation, as training does.

No copy of the tokenisation lives here: an `SFTTrainer` is built around a one-layer placeholder model (preparation
needs a model object, not its weights) with the label settings training used (sftmix.evaluation.label_settings:
chat template, `max_length`, `truncation_mode`, `assistant_only_loss`, `completion_only_loss`,
`dataset_text_field`), and its prepared dataset is the held-out set: the same `input_ids`, the same labels (-100
where training has no loss), the same truncation, and the same examples dropped (no trainable token left).
"""

from __future__ import annotations

import copy
import tempfile

from sftmix._trl_compat import placeholder_model
from sftmix.evaluation.label_settings import LabelSettings
from sftmix.evaluation.token_scores import IGNORE_INDEX


def require_chat_template(tokenizer, what: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{what} needs a chat template, but the tokenizer has none. Set `chat_template_path` (--chat_template_path), "
            "e.g. to sftmix/templates/chatml_training.jinja, the template the recipes train base models with."
        )


def label_args(settings: LabelSettings, first_example: dict, output_dir: str):
    """The `SFTConfig` whose preparation builds training's labels; `assistant_only_loss=None` resolved on the data."""
    from trl import SFTConfig

    from sftmix.response import assistant_only_loss_for

    assistant_only = assistant_only_loss_for(settings.assistant_only_loss, first_example)
    return SFTConfig(
        output_dir,
        max_length=settings.max_length,
        truncation_mode=settings.truncation_mode,
        assistant_only_loss=assistant_only,
        completion_only_loss=settings.completion_only_loss,
        dataset_text_field=settings.dataset_text_field,
        eos_token=settings.eos_token,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        report_to="none",
        save_strategy="no",
        dataset_num_proc=None,
        disable_tqdm=True,
    )


def prepare_heldout(dataset, tokenizer, settings: LabelSettings | None = None):
    """`dataset` (a `datasets.Dataset` in an SFT format) as SFTTrainer prepares it for training: `input_ids` and
    `labels` columns; examples left without a trainable token are dropped, as TRL drops them."""
    from trl import SFTTrainer

    from sftmix.response import check_marks_assistant

    settings = settings or LabelSettings()
    tokenizer = copy.deepcopy(tokenizer)  # SFTTrainer may set the pad token or the template on it
    if settings.chat_template:
        tokenizer.chat_template = settings.chat_template
    first = dataset[0]
    with tempfile.TemporaryDirectory() as output_dir:
        args = label_args(settings, first, output_dir)
        if args.assistant_only_loss:
            check_marks_assistant(tokenizer)  # sftmix's error and fix, before TRL's
        try:
            trainer = SFTTrainer(
                placeholder_model(len(tokenizer)), args, train_dataset=dataset, processing_class=tokenizer
            )
        except ValueError as error:
            raise ValueError(
                f"The held-out set cannot be labelled as training labelled its data ({error}). The model was trained "
                f"with assistant_only_loss={args.assistant_only_loss}; give held-out rows in the training data's format."
            ) from error
        prepared = trainer.train_dataset
        del trainer
    return prepared.select_columns(["input_ids", "labels"])


def num_trainable(labels: list[int]) -> int:
    """Tokens that are predicted with a loss (the first token is never predicted)."""
    return sum(label != IGNORE_INDEX for label in labels[1:])
