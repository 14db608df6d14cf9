"""The Python API keeps the user's objects intact: plain SFTConfig / TrainingArguments work with SFTMixTrainer,
and the stage-1 API leaves the given model object's weights as they were."""

import logging

import pytest
import torch
from dynamics_helpers import conversations as plain_conversations
from dynamics_helpers import sft_config
from helpers import conversations, cpu_settings, tiny_model
from transformers import TrainingArguments
from trl import SFTConfig

from sftmix import SFTMixConfig, SFTMixTrainer


def test_a_plain_sft_config_works_with_sftmix_defaults_for_the_rest(tmp_path, tiny_tokenizer):
    args = SFTConfig(str(tmp_path), **cpu_settings(learning_rate=3e-4, eos_token="<|im_end|>"))
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer), args=args, train_dataset=conversations(), processing_class=tiny_tokenizer
    )
    assert isinstance(trainer.args, SFTMixConfig)
    assert trainer.args.learning_rate == 3e-4 and trainer.args.max_length == 64
    assert trainer.args.eos_token == "<|im_end|>" and trainer.args.pad_token is None
    assert trainer.args.mixup_weight == SFTMixConfig.mixup_weight  # SFTMix's default
    trainer.train()
    assert any("mixup_loss" in h for h in trainer.state.log_history)


def test_plain_training_arguments_work(tmp_path, tiny_tokenizer):
    settings = {
        k: v for k, v in cpu_settings().items() if k not in ("assistant_only_loss", "max_length", "dataset_num_proc")
    }
    args = TrainingArguments(str(tmp_path), **settings)
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer), args=args, train_dataset=conversations(), processing_class=tiny_tokenizer
    )
    assert isinstance(trainer.args, SFTMixConfig) and trainer.args.max_steps == 2
    assert trainer.args.max_length == SFTMixConfig.max_length  # not a TrainingArguments field: SFTMix default
    trainer.train()


def test_compute_dynamics_leaves_the_given_model_object_unchanged(tmp_path, tiny_tokenizer, caplog):
    from sftmix.dynamics import DynamicsConfig, compute_dynamics
    from sftmix.testing import build_tiny_llama

    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    args = DynamicsConfig(scores_path=str(tmp_path / "_dynamics" / "scores.parquet"), num_checkpoints=2)
    with caplog.at_level(logging.WARNING):
        compute_dynamics(
            model,
            plain_conversations(16),
            args,
            processing_class=tiny_tokenizer,
            sft_args=sft_config(tmp_path / "run", max_steps=4, learning_rate=1e-2),
        )
    assert "in place" not in caplog.text
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0, msg=name)
    assert all(p is params[n] for n, p in model.named_parameters())  # the same parameter objects
    assert "forward" not in model.__dict__  # TRL's fused-head patch is removed


def test_compute_dynamics_with_lora_leaves_no_adapter_on_the_given_model(tmp_path, tiny_tokenizer):
    from peft import LoraConfig

    from sftmix.dynamics import DynamicsConfig, compute_dynamics
    from sftmix.testing import build_tiny_llama

    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modules = {name: type(m) for name, m in model.named_modules()}
    compute_dynamics(
        model,
        plain_conversations(16),
        DynamicsConfig(scores_path=str(tmp_path / "_dynamics" / "scores.parquet"), num_checkpoints=2),
        processing_class=tiny_tokenizer,
        sft_args=sft_config(tmp_path / "run", max_steps=4, learning_rate=1e-2),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert {name: type(m) for name, m in model.named_modules()} == modules
    assert model.state_dict().keys() == before.keys()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)


def test_compute_dynamics_restores_the_model_when_the_pass_fails(tmp_path, tiny_tokenizer, monkeypatch):
    from sftmix.dynamics import DynamicsConfig, compute_dynamics, reference
    from sftmix.testing import build_tiny_llama

    def crash(self, args, state, control, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reference.CheckpointCallback, "on_save", crash)
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    args = DynamicsConfig(scores_path=str(tmp_path / "_dynamics" / "scores.parquet"), num_checkpoints=2)
    with pytest.raises(KeyboardInterrupt):
        compute_dynamics(
            model,
            plain_conversations(16),
            args,
            processing_class=tiny_tokenizer,
            sft_args=sft_config(tmp_path / "run", max_steps=4, learning_rate=1e-2),
        )
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)


def test_the_reference_run_keeps_optimizer_state_whatever_the_sftmix_run_saves(tmp_path):
    from sftmix.dynamics import DynamicsConfig
    from sftmix.dynamics.config import reference_training_config

    base = sft_config(tmp_path / "run", save_only_model=True)
    config = reference_training_config(base, tmp_path / "reference", DynamicsConfig(), 8)
    assert config.save_only_model is False
