"""What SFTMixTrainer accepts (SFTTrainer's formats, PEFT, evaluation) and what it refuses, before training."""

import logging

import pandas as pd
import pytest
import torch
from datasets import Dataset
from helpers import conversations, cpu_args, cpu_settings, tiny_model
from trl import SFTConfig, SFTTrainer

from sftmix import SFTMixConfig, SFTMixTrainer
from sftmix.scores import dataset_example_ids, write_scores


def mixup_logs(trainer):
    return [h for h in trainer.state.log_history if "mixup_loss" in h]


def test_missing_confidence_information_is_a_clear_error(tmp_path, tiny_tokenizer):
    data = conversations().remove_columns("confident")
    with pytest.raises(ValueError, match="No confidence information.*sftmix dynamics"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path),
            train_dataset=data,
            processing_class=tiny_tokenizer,
        )


def test_an_empty_group_is_a_clear_error(tmp_path, tiny_tokenizer):
    data = conversations().map(lambda row: {"confident": True})
    with pytest.raises(ValueError, match="One confidence group is empty \\(24 confident, 0 unconfident"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path),
            train_dataset=data,
            processing_class=tiny_tokenizer,
        )


def test_a_non_boolean_group_column_is_a_clear_error(tmp_path, tiny_tokenizer):
    data = conversations().remove_columns("confident")
    data = data.add_column("confident", [1, 0, 1, 2] + [0] * 20)
    with pytest.raises(ValueError, match="must be boolean.*row 3 holds 2"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path),
            train_dataset=data,
            processing_class=tiny_tokenizer,
        )


@pytest.mark.parametrize(
    "settings, needs",
    [(dict(), "SFTMix needs a map-style"), (dict(training_dynamics=True), "`training_dynamics` needs a map-style")],
)
def test_a_streamed_dataset_is_refused_with_what_needs_indexing(tmp_path, tiny_tokenizer, settings, needs):
    data = conversations().to_iterable_dataset()
    with pytest.raises(TypeError, match=f"{needs} `datasets.Dataset` .*by index\\); got IterableDataset"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path, **settings),
            train_dataset=data,
            processing_class=tiny_tokenizer,
        )


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(packing=True), "packing=True"),
        (dict(padding_free=True, max_length=None), "padding_free=True"),
        (dict(per_device_train_batch_size=3), "needs an even number"),
        (dict(mixup_lambda=1.5), "mixup_lambda"),
        (dict(mixup_alpha=0.0), "mixup_alpha"),
        (dict(mixup_lambda_sampling="token"), "mixup_lambda_sampling"),
    ],
)
def test_incompatible_settings_fail_in_the_config(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        SFTMixConfig(str(tmp_path), **cpu_settings(**setting))


def test_packing_is_fine_without_mixup(tmp_path):
    assert SFTMixConfig(str(tmp_path), **cpu_settings(packing=True, mixup_weight=0.0)).packing


def scores_frame(ids, confident):
    return pd.DataFrame(
        {
            "example_id": ids,
            "row_index": range(len(ids)),
            "confidence": [-float(i) for i in range(len(ids))],
            "confident": confident,
        }
    )


def test_scores_file_is_joined_by_content_and_a_mismatched_one_is_refused(tmp_path, tiny_tokenizer):
    data = conversations().remove_columns("confident")
    ids = dataset_example_ids(data)
    good = write_scores(scores_frame(ids, [i < 12 for i in range(24)]), tmp_path / "good.parquet", {})
    shuffled = data.shuffle(seed=1)  # the join survives reordering
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        cpu_args(tmp_path / "out", dynamics_path=str(good)),
        train_dataset=shuffled,
        processing_class=tiny_tokenizer,
    )
    expected = {eid: i < 12 for i, eid in enumerate(ids)}
    assert trainer.train_dataset["confident"] == [expected[e] for e in dataset_example_ids(shuffled)] or len(
        trainer.train_dataset
    ) == len(shuffled)
    assert sum(trainer.train_dataset["confident"]) == 12

    other = conversations(seed=5).remove_columns("confident")
    bad = write_scores(
        scores_frame(dataset_example_ids(other)[:24], [True] * 12 + [False] * 12),
        tmp_path / "bad.parquet",
        {},
    )
    with pytest.raises(ValueError, match="does not cover the training dataset: 24 of 24 examples have no score"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path / "out", dynamics_path=str(bad)),
            train_dataset=data,
            processing_class=tiny_tokenizer,
        )
    with pytest.raises(FileNotFoundError, match="sftmix dynamics"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path / "out", dynamics_path=str(tmp_path / "nope.parquet")),
            train_dataset=data,
            processing_class=tiny_tokenizer,
        )


def test_examples_dropped_by_trl_keep_the_pairing(tmp_path, tiny_tokenizer, caplog):
    rows = conversations(n=24).to_list()
    for row in rows[:5]:  # a prompt that fills max_length leaves no trainable token: TRL drops the example
        row["messages"][0]["content"] = "the patient " * 60
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        cpu_args(tmp_path),
        train_dataset=Dataset.from_list(rows),
        processing_class=tiny_tokenizer,
    )
    assert len(trainer.train_dataset) == 19
    with caplog.at_level(logging.WARNING, logger="sftmix.trainer"):
        trainer.train()
    assert all(log["mixed_tokens"] > 0 for log in mixup_logs(trainer))


def test_examples_dropped_until_a_group_is_empty_is_an_error(tmp_path, tiny_tokenizer):
    rows = conversations(n=8).to_list()
    for row in rows:
        if row["confident"]:
            row["messages"][0]["content"] = "the patient " * 60
    with pytest.raises(ValueError, match="After tokenization and truncation, one confidence group is empty"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tiny_tokenizer,
        )


def test_non_finite_loss_stops_training_naming_the_step(tmp_path, tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    trainer = SFTMixTrainer(model, cpu_args(tmp_path), train_dataset=conversations(), processing_class=tiny_tokenizer)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="at step 1"):
        trainer.train()


@pytest.mark.parametrize("fmt", ["prompt_completion", "text"])
def test_other_dataset_formats_train_with_mixup(tmp_path, tiny_tokenizer, fmt):
    rows = []
    for row in conversations(n=16).to_list():
        user, assistant = (m["content"] for m in row["messages"])
        if fmt == "text":
            rows.append({"text": f"{user} {assistant}", "confident": row["confident"]})
        else:
            rows.append({"prompt": user, "completion": " " + assistant, "confident": row["confident"]})
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        # plain text has no response: Mixup over every token only when asked for
        cpu_args(tmp_path, assistant_only_loss=False, mixup_text_as_response=fmt == "text"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    assert all(log["mixed_tokens"] > 0 for log in mixup_logs(trainer))


def test_model_given_by_path_and_evaluation_is_plain_ntp(tmp_path, tiny_tokenizer, tiny_model_dir):
    data, held_out = conversations(n=24), conversations(n=8, seed=9).remove_columns("confident")
    mix = SFTMixTrainer(str(tiny_model_dir), cpu_args(tmp_path / "a"), train_dataset=data, eval_dataset=held_out)
    plain = SFTTrainer(
        str(tiny_model_dir),
        SFTConfig(str(tmp_path / "b"), **cpu_settings()),
        train_dataset=data,
        eval_dataset=held_out,
    )
    assert mix.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], abs=1e-6)


def test_lora_adapters_receive_the_mixup_gradient(tmp_path, tiny_tokenizer):
    from peft import LoraConfig

    def adapter_grads(mixup_weight):
        trainer = SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            cpu_args(tmp_path, mixup_weight=mixup_weight, mixup_lambda=0.5),
            train_dataset=conversations(),
            processing_class=tiny_tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        trainer.compute_loss(trainer.model, dict(batch)).backward()
        return torch.cat([p.grad.flatten() for n, p in trainer.model.named_parameters() if "lora_" in n])

    with_mixup, without = adapter_grads(1.0), adapter_grads(0.0)
    assert with_mixup.abs().sum() > 0
    assert (with_mixup - without).abs().max() > 1e-6
