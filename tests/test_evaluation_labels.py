"""Held-out evaluation labels data exactly as training does: the loss of `sftmix eval` on a saved model equals
`trainer.evaluate()` of the trainer that saved it, through the label settings file saved with the model."""

import json

import pytest
from datasets import Dataset
from helpers import conversations, cpu_settings, tiny_model
from trl import SFTConfig, SFTTrainer

from sftmix import SFTMixConfig, SFTMixTrainer
from sftmix.evaluation.cli import run_eval_cli
from sftmix.evaluation.label_settings import LABEL_SETTINGS_FILE, load_label_settings, save_label_settings
from sftmix.testing import make_conversations


def heldout_rows(fmt, n=10):
    convs = make_conversations(n, seed=11)
    if fmt == "messages":
        return convs
    if fmt == "prompt_completion":
        return [
            {"prompt": c["messages"][0]["content"] + " ", "completion": c["messages"][1]["content"]} for c in convs
        ]
    return [{"text": c["messages"][0]["content"] + ". " + c["messages"][1]["content"]} for c in convs]


def train_and_save(tmp_path, tokenizer, fmt, **overrides):
    """Two training steps, save as the pipeline does, and the trainer's own held-out loss (one eval batch, so the
    batch mean is the token mean over the whole held-out set)."""
    out = tmp_path / "model"
    held_out = Dataset.from_list(heldout_rows(fmt))
    settings = cpu_settings(per_device_eval_batch_size=64, max_length=40, **overrides)
    if fmt == "messages":  # SFTMixTrainer, SFTMixConfig's own default masking (assistant_only_loss=None)
        settings.pop("assistant_only_loss")
        args = SFTMixConfig(str(out), mixup_weight=0.5, **settings)
        trainer = SFTMixTrainer(
            tiny_model(tokenizer),
            args,
            train_dataset=conversations(8),
            eval_dataset=held_out,
            processing_class=tokenizer,
        )
    else:
        settings["assistant_only_loss"] = False
        train = Dataset.from_list(heldout_rows(fmt, 8))
        args = SFTConfig(str(out), **settings)
        trainer = SFTTrainer(
            tiny_model(tokenizer),
            args,
            train_dataset=train,
            eval_dataset=held_out,
            processing_class=tokenizer,
        )
    trainer.train()
    trainer.save_model(str(out))
    save_label_settings(
        trainer.args,
        out,
        tokenizer=trainer.processing_class,
        completion_only_loss=trainer.completion_only_loss,
    )
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in heldout_rows(fmt)))
    return out, path, trainer.evaluate()["eval_loss"]


@pytest.mark.parametrize(
    "fmt,overrides",
    [
        ("messages", {}),
        ("prompt_completion", {"truncation_mode": "keep_end"}),
        ("text", {}),
    ],
)
def test_sftmix_eval_heldout_loss_equals_trainer_evaluate(tmp_path, tiny_tokenizer, fmt, overrides):
    model_dir, heldout, eval_loss = train_and_save(tmp_path, tiny_tokenizer, fmt, **overrides)
    settings = load_label_settings(model_dir)
    assert settings.max_length == 40
    if fmt == "messages":
        assert settings.assistant_only_loss is True  # the resolved value, not SFTMixConfig's None
    results = run_eval_cli(
        ["--model", str(model_dir), "--heldout", str(heldout), "--output_dir", str(tmp_path / "eval")]
        + ["--show_progress", "false", "--batch_size", "3"]
    )
    assert results["heldout"]["loss"] == pytest.approx(eval_loss, abs=1e-5)


def test_label_settings_file_records_template_and_masking(tmp_path, tiny_tokenizer):
    args = SFTMixConfig(str(tmp_path), **cpu_settings(max_length=77, truncation_mode="keep_end"))
    path = save_label_settings(args, tmp_path, tokenizer=tiny_tokenizer)
    assert path.name == LABEL_SETTINGS_FILE
    saved = json.loads(path.read_text())
    assert saved["chat_template"] == tiny_tokenizer.chat_template
    assert (saved["max_length"], saved["truncation_mode"], saved["assistant_only_loss"]) == (
        77,
        "keep_end",
        True,
    )
    assert saved["dataset_text_field"] == "text" and saved["completion_only_loss"] is None


def test_without_a_settings_file_the_eval_settings_decide(tmp_path, tiny_tokenizer, tiny_model_dir):
    """A model not saved by sftmix: the max_length and template given to `sftmix eval` are used."""
    from sftmix.evaluation import EvalConfig
    from sftmix.evaluation.label_settings import resolve_label_settings

    template = tmp_path / "t.jinja"
    template.write_text(tiny_tokenizer.chat_template)
    settings = resolve_label_settings(tiny_model_dir, EvalConfig(max_length=33, chat_template_path=str(template)))
    assert settings.max_length == 33 and settings.chat_template == tiny_tokenizer.chat_template
    assert settings.assistant_only_loss is None  # resolved on the held-out data: conversations -> response only
