"""The training settings that decide which tokens carry a loss, saved with the model as `sftmix_label_settings.json`
so that `sftmix eval --model DIR` (which has no recipe) prepares held-out data exactly as training did (the file's
keys: docs/evaluation.md, "Held-out NTP")."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

logger = logging.getLogger(__name__)

LABEL_SETTINGS_FILE = "sftmix_label_settings.json"
FORMAT_VERSION = 1
# SFTConfig's default sequence length (TRL 1.16), used when neither the model directory nor the evaluation says one.
DEFAULT_MAX_LENGTH = 1024


@dataclass
class LabelSettings:
    chat_template: str | None = None  # None: the tokenizer's own template
    max_length: int | None = DEFAULT_MAX_LENGTH
    truncation_mode: str = "keep_start"
    assistant_only_loss: bool | None = None  # None: True on conversations, False otherwise (SFTMixConfig's rule)
    completion_only_loss: bool | None = None  # None: TRL's rule (True on prompt/completion data)
    dataset_text_field: str = "text"
    eos_token: str | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"format_version": FORMAT_VERSION}


def _template_text(args, tokenizer) -> str | None:
    if tokenizer is not None:
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        if template:
            return template
    path = getattr(args, "chat_template_path", None)
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8")
    return None  # the saved tokenizer's own template (or a template cloned into it by TRL)


def save_label_settings(args, output_dir, tokenizer=None, completion_only_loss: bool | None = None) -> Path | None:
    """Write `sftmix_label_settings.json` into `output_dir` (main process only); returns its path.

    Call it after `trainer.save_model(output_dir)` with the trainer's `args` (whose `assistant_only_loss` the
    trainer has resolved); pass `tokenizer=trainer.processing_class` and
    `completion_only_loss=trainer.completion_only_loss` when a trainer is at hand.
    """
    if getattr(args, "process_index", 0) != 0:
        return None
    settings = LabelSettings(
        chat_template=_template_text(args, tokenizer),
        max_length=args.max_length,
        truncation_mode=args.truncation_mode,
        assistant_only_loss=args.assistant_only_loss,
        completion_only_loss=(completion_only_loss if completion_only_loss is not None else args.completion_only_loss),
        dataset_text_field=args.dataset_text_field,
        eos_token=getattr(args, "eos_token", None),
    )
    path = Path(output_dir) / LABEL_SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_label_settings(model_dir) -> LabelSettings | None:
    """The settings saved with the model at `model_dir`, or None when it has none (a model not trained by sftmix)."""
    path = Path(model_dir) / LABEL_SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it or re-save the model.") from error
    if values.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer sftmix (format {values['format_version']}); upgrade sftmix.")
    return LabelSettings(**{f.name: values[f.name] for f in fields(LabelSettings) if f.name in values})


def resolve_label_settings(model_dir, config) -> LabelSettings:
    """The saved settings of `model_dir`, overridden by what `config` (an EvalConfig) sets explicitly."""
    settings = load_label_settings(model_dir) if model_dir is not None else None
    if settings is None:
        settings = LabelSettings()
        if model_dir is not None:
            logger.info(
                "%s has no %s (not saved by sftmix training): held-out labels use max_length %s and response-only "
                "loss on conversations; set `max_length` / `chat_template_path` to match the training.",
                model_dir,
                LABEL_SETTINGS_FILE,
                config.max_length or DEFAULT_MAX_LENGTH,
            )
    if config.max_length is not None:
        settings.max_length = config.max_length
    if config.chat_template_path:
        settings.chat_template = Path(config.chat_template_path).read_text(encoding="utf-8")
    return settings
