"""The Mixup term covers response tokens only, on the data users bring: default masking, NTP on every token,
multi-turn conversations of unequal turn counts, plain text. Checked against a naive computation that finds the
assistant turns by scanning the token ids for ChatML markers (never through the trainer's masks)."""

import random

import pytest
import torch
from datasets import Dataset
from helpers import cpu_settings, tiny_model
from trl import SFTConfig, SFTTrainer

from sftmix import SFTMixConfig, SFTMixTrainer
from sftmix.collator import CONFIDENT_KEY
from sftmix.response import NoResponseError
from sftmix.testing import random_sentence


def multi_turn(n=24, seed=0):
    """Conversations of 1-3 assistant turns (some with a system prompt), alternating confident / unconfident."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": random_sentence(rng, 2, 5)}] if i % 3 == 0 else []
        for _ in range(rng.choice([1, 2, 3])):
            messages.append({"role": "user", "content": random_sentence(rng, 2, 8)})
            messages.append({"role": "assistant", "content": random_sentence(rng, 1, 12)})
        rows.append({"messages": messages, "confident": i % 2 == 0})
    return Dataset.from_list(rows)


def default_args(output_dir, **overrides):
    """cpu settings without `assistant_only_loss`: SFTMixConfig's own default decides the NTP masking."""
    settings = cpu_settings(**overrides)
    if "assistant_only_loss" not in overrides:
        settings.pop("assistant_only_loss")
    return SFTMixConfig(str(output_dir), **settings)


def assistant_turns(ids, tokenizer, length=None):
    """Per row: lists of positions of each assistant reply (content + <|im_end|>), found by scanning the ids;
    a reply cut by truncation runs to the row's last token (`length` tokens are real, the rest padding)."""
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    header = tokenizer.encode("assistant\n", add_special_tokens=False)
    ids = ids.tolist()[:length]
    turns, t = [], 0
    while t < len(ids):
        if ids[t] == start and ids[t + 1 : t + 1 + len(header)] == header:
            first = t + 1 + len(header)
            last = ids.index(end, first) if end in ids[first:] else len(ids) - 1
            turns.append(list(range(first, last + 1)))
            t = last
        t += 1
    return turns


def naive_loss(model, batch, tokenizer, lam, mixup_weight, ntp_on_all_tokens, alignment):
    """fp32, full logits: token-mean NTP + mu * token-mean soft-target CE over aligned response positions."""
    with torch.no_grad():
        ids, attention = batch["input_ids"], batch["attention_mask"]
        hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state.double()
        weight = model.lm_head.weight.double()
        logp = torch.log_softmax(hidden @ weight.T, dim=-1)  # logp[r, t] predicts ids[r, t + 1]
        turns = [assistant_turns(row, tokenizer, int(n)) for row, n in zip(ids, attention.sum(1), strict=True)]
        ntp_sum, ntp_n = 0.0, 0
        for r in range(ids.shape[0]):
            if ntp_on_all_tokens:
                targets = [p for p in range(1, ids.shape[1]) if attention[r, p]]
            else:
                targets = [p for turn in turns[r] for p in turn]
            for p in targets:
                ntp_sum -= logp[r, p - 1, ids[r, p]].item()
                ntp_n += 1
        confident = batch[CONFIDENT_KEY].tolist()
        rows_c = [r for r, c in enumerate(confident) if c]
        rows_u = [r for r, c in enumerate(confident) if not c]
        mix_sum, mix_n = 0.0, 0
        for c, u in zip(rows_c, rows_u, strict=True):
            if alignment == "response":
                spans = [([p for t in turns[c] for p in t], [p for t in turns[u] for p in t])]
            else:
                spans = list(zip(turns[c], turns[u], strict=False))
            for span_c, span_u in spans:
                for pc, pu in zip(span_c, span_u, strict=False):
                    z = lam * hidden[c, pc - 1] + (1 - lam) * hidden[u, pu - 1]
                    lp = torch.log_softmax(weight @ z, dim=-1)
                    mix_sum -= lam * lp[ids[c, pc]].item() + (1 - lam) * lp[ids[u, pu]].item()
                    mix_n += 1
    return ntp_sum / ntp_n + mixup_weight * mix_sum / mix_n, mix_n


@pytest.mark.parametrize(
    "masking, alignment",
    [("default", "response"), ("all_tokens", "response"), ("default", "turn"), ("all_tokens", "turn")],
)
def test_mixup_term_covers_assistant_positions_only(tmp_path, tiny_tokenizer, masking, alignment):
    extra = {} if masking == "default" else {"assistant_only_loss": False}
    args = default_args(
        tmp_path, mixup_lambda=0.3, mixup_alignment=alignment, max_length=128, mixup_chunk_size=5, **extra
    )
    model = tiny_model(tiny_tokenizer)
    trainer = SFTMixTrainer(model, args, train_dataset=multi_turn(), processing_class=tiny_tokenizer)
    assert trainer.args.assistant_only_loss is (masking == "default")  # None resolved for conversations
    model.train()
    checked_multi_turn = False
    for batch in list(trainer.get_train_dataloader())[:3]:
        turn_counts = [len(assistant_turns(row, tiny_tokenizer)) for row in batch["input_ids"]]
        checked_multi_turn |= len(set(turn_counts)) > 1 and max(turn_counts) >= 3
        trainer._num_mixed_in_batch = None
        loss = trainer.compute_loss(model, dict(batch))
        expected, mixed = naive_loss(model, batch, tiny_tokenizer, 0.3, 0.2, masking == "all_tokens", alignment)
        assert mixed > 0
        torch.testing.assert_close(loss.double().item(), expected, atol=1e-5, rtol=1e-5)
    assert checked_multi_turn  # pairs of conversations with unequal turn counts, up to 3 turns, were checked


def test_mixup_over_labelled_tokens_would_differ(tmp_path, tiny_tokenizer):
    """The check above can fail: counting prompt positions as mixed gives another loss."""
    args = default_args(tmp_path, mixup_lambda=0.3, assistant_only_loss=False, max_length=128)
    model = tiny_model(tiny_tokenizer)
    trainer = SFTMixTrainer(model, args, train_dataset=multi_turn(), processing_class=tiny_tokenizer)
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(model, dict(batch))
    right, _ = naive_loss(model, batch, tiny_tokenizer, 0.3, 0.2, True, "response")
    ntp_only, _ = naive_loss(model, batch, tiny_tokenizer, 0.3, 0.0, True, "response")
    assert abs(loss.item() - right) < 1e-5 and abs(right - ntp_only) > 0.05


def test_default_ntp_masking_is_response_only_and_mixup_weight_zero_is_sfttrainer(tmp_path, tiny_tokenizer):
    data = multi_turn()
    common = dict(max_steps=3, learning_rate=1e-2, max_length=128)
    mix = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        default_args(tmp_path / "a", mixup_weight=0.0, **common),
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )
    assert mix.args.assistant_only_loss is True
    mix.train()
    plain = SFTTrainer(
        tiny_model(tiny_tokenizer),
        SFTConfig(str(tmp_path / "b"), **cpu_settings(assistant_only_loss=True, **common)),
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )
    plain.train()
    ours = [h["loss"] for h in mix.state.log_history if "loss" in h]
    theirs = [h["loss"] for h in plain.state.log_history if "loss" in h]
    assert len(ours) == 3 and ours == pytest.approx(theirs, abs=1e-6)


def text_rows(n=24):
    rng = random.Random(0)
    return Dataset.from_list([{"text": random_sentence(rng, 4, 15), "confident": i % 2 == 0} for i in range(n)])


def test_text_data_is_refused_unless_the_user_opts_in(tmp_path, tiny_tokenizer):
    with pytest.raises(NoResponseError, match="Plain-text data.*messages.*mixup_text_as_response"):
        SFTMixTrainer(
            tiny_model(tiny_tokenizer),
            default_args(tmp_path),
            train_dataset=text_rows(),
            processing_class=tiny_tokenizer,
        )
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        default_args(tmp_path, mixup_text_as_response=True, mixup_lambda=0.5),
        train_dataset=text_rows(),
        processing_class=tiny_tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    # every token of the text is response: the mask equals the attention mask
    assert torch.equal(batch["sftmix_response_mask"], batch["attention_mask"].bool())
    trainer.train()
    assert any("mixup_loss" in h for h in trainer.state.log_history)


def test_a_template_that_marks_no_assistant_tokens_is_refused_before_training(tmp_path, tiny_tokenizer):
    import copy

    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    for masking in ({}, {"assistant_only_loss": False}):
        with pytest.raises(NoResponseError, match="generation.*chat_template_path"):
            SFTMixTrainer(
                tiny_model(tokenizer),
                default_args(tmp_path, **masking),
                train_dataset=multi_turn(),
                processing_class=tokenizer,
            )


def test_prompt_completion_mixes_the_completion_only(tmp_path, tiny_tokenizer):
    rng = random.Random(1)
    rows = [
        {
            "prompt": random_sentence(rng, 3, 8) + " :",
            "completion": " " + random_sentence(rng, 2, 9),
            "confident": i % 2 == 0,
        }
        for i in range(16)
    ]
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        default_args(tmp_path, completion_only_loss=False),  # NTP on every token; Mixup still on the completion
        train_dataset=Dataset.from_list(rows),
        processing_class=tiny_tokenizer,
    )
    prepared = trainer.train_dataset
    for row, raw in zip(prepared, trainer.train_dataset, strict=True):
        assert all(label != -100 for label in row["labels"])  # NTP on every token
        completion = [t for t, bit in zip(raw["input_ids"], row["sftmix_response_mask"], strict=True) if bit]
        prompt_len = len(row["input_ids"]) - len(completion)
        assert row["sftmix_response_mask"] == [0] * prompt_len + [1] * len(completion)
        assert 0 < prompt_len < len(row["input_ids"])


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(train_sampling_strategy="group_by_length"), "train_sampling_strategy"),
        (dict(train_sampling_strategy="sequential"), "train_sampling_strategy"),
        (dict(accelerator_config={"split_batches": True}), "split_batches"),
        (dict(mixup_alignment="token"), "mixup_alignment"),
    ],
)
def test_sampler_settings_sftmix_overrides_are_refused(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        SFTMixConfig(str(tmp_path), **cpu_settings(**setting))
    if "mixup_alignment" not in setting:  # plain SFT keeps the Trainer's sampler, so the setting is honoured
        assert SFTMixConfig(str(tmp_path), **cpu_settings(mixup_weight=0.0, **setting)) is not None


def test_assistant_only_loss_none_is_response_only_ntp_on_conversations_only():
    from sftmix.response import assistant_only_loss_for

    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert assistant_only_loss_for(None, chat) is True and assistant_only_loss_for(False, chat) is False
    assert assistant_only_loss_for(None, {"prompt": "a", "completion": "b"}) is False
    assert assistant_only_loss_for(None, None) is False and assistant_only_loss_for(True, None) is True
