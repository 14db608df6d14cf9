"""Heads that are not a plain projection: the Mixup term applies the model's own logit transform (soft-capping,
scaling), checked against a naive computation written here; a head sftmix does not know is refused by the probe."""

import pytest
import torch
from test_trainer_response import assistant_turns, default_args, multi_turn
from transformers import LlamaForCausalLM

from sftmix import SFTMixTrainer
from sftmix.collator import CONFIDENT_KEY
from sftmix.forward import HeadMismatchError
from sftmix.testing import build_tiny_llama

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, pad_token_id=0)


def gemma2(vocab):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=vocab, num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.03, **SMALL)
    return Gemma2ForCausalLM(config), lambda logits: 0.03 * torch.tanh(logits / 0.03)


def granite(vocab):
    from transformers import GraniteConfig, GraniteForCausalLM

    config = GraniteConfig(vocab_size=vocab, num_key_value_heads=1, logits_scaling=0.25, **SMALL)
    return GraniteForCausalLM(config), lambda logits: logits / 0.25


def falcon_h1(vocab):
    from transformers import FalconH1Config, FalconH1ForCausalLM

    config = FalconH1Config(
        vocab_size=vocab,
        num_key_value_heads=1,
        head_dim=16,
        lm_head_multiplier=3.0,
        mamba_d_ssm=32,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_d_state=8,
        **SMALL,
    )
    return FalconH1ForCausalLM(config), lambda logits: logits * 3.0


def naive_mixup_mean(model, batch, tokenizer, lam, transform):
    with torch.no_grad():
        ids, attention = batch["input_ids"], batch["attention_mask"]
        hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state.double()
        weight = model.get_output_embeddings().weight.double()
        turns = [assistant_turns(row, tokenizer, int(n)) for row, n in zip(ids, attention.sum(1), strict=True)]
        confident = batch[CONFIDENT_KEY].tolist()
        rows_c = [r for r, c in enumerate(confident) if c]
        rows_u = [r for r, c in enumerate(confident) if not c]
        total, count = 0.0, 0
        for c, u in zip(rows_c, rows_u, strict=True):
            pos_c = [p for t in turns[c] for p in t]
            pos_u = [p for t in turns[u] for p in t]
            for pc, pu in zip(pos_c, pos_u, strict=False):
                z = lam * hidden[c, pc - 1] + (1 - lam) * hidden[u, pu - 1]
                lp = torch.log_softmax(transform(weight @ z), dim=-1)
                total -= lam * lp[ids[c, pc]].item() + (1 - lam) * lp[ids[u, pu]].item()
                count += 1
    return total / count


@pytest.mark.parametrize("build", [gemma2, granite, falcon_h1], ids=["gemma2-softcap", "granite-scaling", "falcon-h1"])
def test_mixup_applies_the_heads_transform(tmp_path, tiny_tokenizer, build):
    torch.manual_seed(0)
    model, transform = build(len(tiny_tokenizer))
    args = default_args(tmp_path, mixup_lambda=0.3, max_length=96, max_steps=1)
    trainer = SFTMixTrainer(model, args, train_dataset=multi_turn(8), processing_class=tiny_tokenizer)
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    _, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
    ours = (outputs.mixup_loss_sum / outputs.mixed_tokens).item()
    expected = naive_mixup_mean(model, batch, tiny_tokenizer, 0.3, transform)
    assert ours == pytest.approx(expected, abs=1e-5, rel=1e-5)
    plain = naive_mixup_mean(model, batch, tiny_tokenizer, 0.3, lambda logits: logits)
    assert abs(plain - expected) > 1e-3  # the transform changes the value: the check can fail
    trainer.train()  # the probe passes on the real forward and a step trains


class DoubledLogits(LlamaForCausalLM):
    """A head transform no config attribute announces: the logits are doubled in the forward."""

    def forward(self, *args, **kwargs):
        outputs = super().forward(*args, **kwargs)
        outputs.logits = outputs.logits * 2
        return outputs


def test_an_unknown_head_transform_is_refused_by_the_probe(tmp_path, tiny_tokenizer):
    reference = build_tiny_llama(len(tiny_tokenizer))
    model = DoubledLogits(reference.config)
    model.load_state_dict(reference.state_dict())
    trainer = SFTMixTrainer(
        model,
        default_args(tmp_path, max_steps=1),
        train_dataset=multi_turn(8),
        processing_class=tiny_tokenizer,
    )
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(HeadMismatchError, match="does not reproduce the model's own logits"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # nothing trained


@pytest.mark.parametrize("build", [gemma2, granite, falcon_h1], ids=["gemma2", "granite", "falcon_h1"])
def test_evaluation_scores_the_heads_that_training_mixes(tiny_tokenizer, build):
    """One head transform for training and evaluation: held-out token log-probabilities equal the model's own
    log-softmax (a Falcon-H1 model, whose `lm_head_multiplier` evaluation once ignored, included)."""
    from sftmix.evaluation.heldout import check_head, score_label_tokens

    torch.manual_seed(0)
    model, _ = build(len(tiny_tokenizer))
    model.eval()
    ids = torch.randint(3, len(tiny_tokenizer), (2, 9))
    labels = ids.clone()
    labels[:, :4] = -100
    check_head(model, ids)
    scores = score_label_tokens(model, ids, torch.ones_like(ids), labels)
    with torch.no_grad():
        naive = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)
    expected = torch.stack([naive[r, t - 1, ids[r, t]] for r in range(2) for t in range(4, 9)])
    assert torch.allclose(scores.logprob.double(), expected, atol=1e-4)
