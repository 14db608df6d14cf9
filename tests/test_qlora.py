"""QLoRA through the recipe path: a 4-bit tiny model, LoRA adapters, the Mixup term, the CPU fix."""

import pytest
import torch
from helpers import conversations, cpu_args
from trl import ModelConfig

from sftmix import SFTMixTrainer
from sftmix.modeling import load_model_and_tokenizer


def qlora_model(model_dir, tmp_path):
    model_args = ModelConfig(
        model_name_or_path=str(model_dir),
        load_in_4bit=True,
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_target_modules=["q_proj", "v_proj"],
        dtype="float32",
    )
    return load_model_and_tokenizer(model_args, cpu_args(tmp_path))


def lora_grads_after(model_dir, tmp_path, evaluate_first: bool):
    model, tokenizer, peft_config = qlora_model(model_dir, tmp_path)
    trainer = SFTMixTrainer(
        model,
        cpu_args(tmp_path, mixup_lambda=0.5),
        train_dataset=conversations(),
        eval_dataset=conversations(n=4, seed=3).remove_columns("confident"),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    torch.manual_seed(0)
    for name, param in trainer.model.named_parameters():  # non-zero B so that A's gradient is not zero
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    if evaluate_first:
        trainer.evaluate()  # a no-grad forward: on AVX512-BF16 CPUs this used to corrupt LoRA gradients
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trainer.compute_loss(trainer.model, dict(batch)).backward()
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_qlora_trains_with_mixup_and_evaluation_does_not_change_gradients(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    model, _, _ = qlora_model(tiny_model_dir, tmp_path)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)

    plain = lora_grads_after(tiny_model_dir, tmp_path / "a", evaluate_first=False)
    after_eval = lora_grads_after(tiny_model_dir, tmp_path / "b", evaluate_first=True)
    assert plain and all("lora_" in name for name in plain)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(after_eval[name], grad, atol=1e-6, rtol=1e-5)


def test_quantized_model_without_adapters_is_refused(tiny_model_dir, tmp_path):
    model_args = ModelConfig(model_name_or_path=str(tiny_model_dir), load_in_4bit=True, dtype="float32")
    with pytest.raises(ValueError, match="use_peft: true"):
        load_model_and_tokenizer(model_args, cpu_args(tmp_path))
