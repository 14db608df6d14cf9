"""SFTMixTrainer's loss against an independent computation, and the invariances it must keep."""

import pytest
import torch
from helpers import conversations, cpu_args, cpu_settings, tiny_model
from test_mixup import naive_mixup_sum
from trl import SFTConfig, SFTTrainer

from sftmix import SFTMixTrainer
from sftmix.collator import CONFIDENT_KEY


def naive_step_loss(model, batch, lambdas, mixup_weight):
    """Full logits in fp32: token-mean NTP over the batch + mu * token-mean Mixup (loops over pairs)."""
    with torch.no_grad():
        backbone = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = backbone.last_hidden_state[:, :-1]
        logits = hidden @ model.lm_head.weight.T
        labels = batch["labels"][:, 1:]
        ntp = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        confident = batch[CONFIDENT_KEY]
        mixup_sum = naive_mixup_sum(hidden, labels, confident, lambdas, model.lm_head.weight)
        counts = (labels != -100).sum(1)
        n_mixed = torch.minimum(counts[confident], counts[~confident]).sum()
    return ntp.double() + mixup_weight * mixup_sum / n_mixed


@pytest.mark.parametrize("fixed_lambda", [0.3, None])
def test_one_step_loss_equals_naive_ntp_plus_weighted_mixup(tmp_path, tiny_tokenizer, fixed_lambda):
    model = tiny_model(tiny_tokenizer)
    args = cpu_args(tmp_path, mixup_lambda=fixed_lambda, mixup_weight=0.2, mixup_chunk_size=7)
    trainer = SFTMixTrainer(model, args, train_dataset=conversations(), processing_class=tiny_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch[CONFIDENT_KEY].tolist() == [True, True, False, False]
    drawn = []
    draw = trainer._draw_lambdas
    trainer._draw_lambdas = lambda n: drawn.append(draw(n)) or drawn[-1]
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    lambdas = torch.as_tensor(drawn[0])
    if fixed_lambda is not None:
        assert lambdas.tolist() == [fixed_lambda] * 2
    expected = naive_step_loss(model, batch, lambdas, mixup_weight=0.2)
    torch.testing.assert_close(loss.double(), expected, atol=1e-5, rtol=1e-5)
    # and the Mixup term is really there: without it the loss is plain NTP
    ntp_only = naive_step_loss(model, batch, lambdas, mixup_weight=0.0)
    assert abs(loss.item() - ntp_only.item()) > 0.1


def test_mixup_weight_zero_gives_sfttrainer_losses_step_by_step(tmp_path, tiny_tokenizer):
    data = conversations(n=24)
    common = dict(max_steps=4, learning_rate=1e-2)
    mix = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        cpu_args(tmp_path / "a", mixup_weight=0.0, **common),
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )
    mix.train()
    plain = SFTTrainer(
        tiny_model(tiny_tokenizer),
        SFTConfig(str(tmp_path / "b"), **cpu_settings(**common)),
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )
    plain.train()
    ours = [h["loss"] for h in mix.state.log_history if "loss" in h]
    theirs = [h["loss"] for h in plain.state.log_history if "loss" in h]
    assert len(ours) == 4
    assert ours == pytest.approx(theirs, abs=1e-6)


def trained_weights(tmp_path, tokenizer, **overrides):
    settings = dict(max_steps=1, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", mixup_lambda=0.3)
    settings.update(overrides)
    model = tiny_model(tokenizer)
    trainer = SFTMixTrainer(
        model, cpu_args(tmp_path, **settings), train_dataset=conversations(), processing_class=tokenizer
    )
    trainer.train()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_gradient_accumulation_2x2_equals_1x4(tmp_path, tiny_tokenizer):
    one_by_four = trained_weights(tmp_path / "a", tiny_tokenizer, per_device_train_batch_size=4)
    two_by_two = trained_weights(
        tmp_path / "b", tiny_tokenizer, per_device_train_batch_size=2, gradient_accumulation_steps=2
    )
    torch.testing.assert_close(two_by_two, one_by_four, atol=1e-6, rtol=1e-5)
    # the comparison is sensitive enough to see a change of the Mixup weight
    other = trained_weights(tmp_path / "c", tiny_tokenizer, per_device_train_batch_size=4, mixup_weight=0.3)
    assert (other - one_by_four).abs().max() > 1e-4


def test_resume_from_checkpoint_continues_the_same_run(tmp_path, tiny_tokenizer):
    def run(output_dir, resume=None, max_steps=4):
        args = cpu_args(output_dir, max_steps=max_steps, save_strategy="steps", save_steps=2, learning_rate=1e-2)
        trainer = SFTMixTrainer(
            tiny_model(tiny_tokenizer), args, train_dataset=conversations(), processing_class=tiny_tokenizer
        )
        trainer.train(resume_from_checkpoint=resume)
        return {h["step"]: (h["loss"], h["mixup_lambda"]) for h in trainer.state.log_history if "loss" in h}

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "full", resume=str(tmp_path / "full" / "checkpoint-2"))
    assert {3, 4} <= set(resumed)  # steps 1-2 come from the checkpoint state, 3-4 are trained again
    for step in (3, 4):
        assert resumed[step] == pytest.approx(full[step], abs=1e-6)
