"""Scoring on a tiny model against naive full-logit computations: per-token scores, held-out metrics; benchmark accuracy of a model fitted to the answers;
and held-out preparation against the labels TRL's SFTTrainer builds for training."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from sftmix.evaluation.benchmarks import load_benchmark
from sftmix.evaluation.calibration import expected_calibration_error
from sftmix.evaluation.heldout import (
    check_head,
    heldout_metrics,
    prepare_heldout,
    score_label_tokens,
)
from sftmix.evaluation.label_settings import LabelSettings
from sftmix.testing import build_tiny_llama, make_conversations

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    return build_tiny_llama(len(tiny_tokenizer), seed=1).eval()


def pad_batch(sequences, labels, pad_token_id):
    """`input_ids`, `attention_mask` and `labels` padded as training (and held-out scoring) pads them."""
    collate = DataCollatorForLanguageModeling(pad_token_id)
    return collate([{"input_ids": ids, "labels": lab} for ids, lab in zip(sequences, labels, strict=True)])


def naive_token_scores(model, input_ids, labels):
    """One unpadded sequence: full logits -> log-softmax -> (log p(label), max prob, argmax == label) per label."""
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=torch.tensor([input_ids])).logits[0].double(), -1)
    out = []
    for t in range(len(input_ids) - 1):
        label = labels[t + 1]
        if label != -100:
            out.append((logps[t, label].item(), logps[t].exp().max().item(), int(logps[t].argmax()) == label))
    return out


def tiny_gemma2(vocab_size):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=0.7,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return Gemma2ForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["llama", "gemma2_softcap"])
@pytest.mark.parametrize("chunk_size", [3, 10_000])
def test_label_token_scores_match_full_logits(tiny_tokenizer, tiny_model, arch, chunk_size):
    model = tiny_model if arch == "llama" else tiny_gemma2(len(tiny_tokenizer))
    g = torch.Generator().manual_seed(0)
    sequences, labels = [], []
    for length in (9, 4, 13):
        ids = torch.randint(3, len(tiny_tokenizer), (length,), generator=g).tolist()
        keep = torch.rand(length, generator=g) < 0.6
        sequences.append(ids)
        labels.append([t if k else -100 for t, k in zip(ids, keep.tolist(), strict=True)])
    batch = pad_batch(sequences, labels, tiny_tokenizer.pad_token_id)
    scores = score_label_tokens(model, **batch, chunk_size=chunk_size)
    expected = [
        (row, *s)
        for row, (i, lab) in enumerate(zip(sequences, labels, strict=True))
        for s in naive_token_scores(model, i, lab)
    ]
    assert scores.row.tolist() == [e[0] for e in expected]
    assert np.allclose(scores.logprob.numpy(), [e[1] for e in expected], atol=1e-5)
    assert np.allclose(scores.confidence.numpy(), [e[2] for e in expected], atol=1e-6)
    assert scores.correct.tolist() == [e[3] for e in expected]
    check_head(model, batch["input_ids"])  # agrees with the model's own forward


def test_an_unknown_head_transformation_is_caught(tiny_tokenizer, monkeypatch):
    import sftmix.evaluation.heldout as heldout

    model = tiny_gemma2(len(tiny_tokenizer))
    from sftmix.mixup import HeadTransform

    monkeypatch.setattr(heldout, "head_transform", lambda config: HeadTransform())  # soft-cap unknown
    with pytest.raises(RuntimeError, match="does not reproduce the model's own logits.*gemma2"):
        check_head(model, torch.arange(3, 12)[None])


def sft_rows(n=6):
    convs = make_conversations(n, seed=3)
    return {
        "messages": convs,
        "prompt_completion": [
            {"prompt": c["messages"][0]["content"] + " ", "completion": c["messages"][1]["content"]} for c in convs
        ],
        "conversational_prompt_completion": [
            {"prompt": c["messages"][:1], "completion": c["messages"][1:]} for c in convs
        ],
        "text": [{"text": c["messages"][0]["content"] + ". " + c["messages"][1]["content"]} for c in convs],
    }


@pytest.mark.parametrize("fmt", ["messages", "prompt_completion", "conversational_prompt_completion", "text"])
def test_heldout_labels_are_the_ones_sft_trainer_trains_on(tmp_path, tiny_tokenizer, tiny_model, fmt):
    from trl import SFTConfig, SFTTrainer

    rows = sft_rows()[fmt]
    args = SFTConfig(
        str(tmp_path),
        assistant_only_loss=fmt != "text" and fmt != "prompt_completion",
        max_length=40,
        use_cpu=True,
        bf16=False,
        report_to="none",
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(tiny_model, args, train_dataset=Dataset.from_list(rows), processing_class=tiny_tokenizer)
    settings = LabelSettings(max_length=40, assistant_only_loss=args.assistant_only_loss)
    kept = prepare_heldout(Dataset.from_list(rows), tiny_tokenizer, settings)  # TRL drops the same examples
    assert kept["input_ids"] == trainer.train_dataset["input_ids"]
    assert kept["labels"] == trainer.train_dataset["labels"]
    assert 0 < len(kept) and any(-100 in labels for labels in kept["labels"]) == (fmt != "text")


def test_heldout_metrics_match_naive_per_example_computation(tiny_tokenizer, tiny_model):
    rows = make_conversations(7, seed=5)
    result = heldout_metrics(tiny_model, tiny_tokenizer, rows, batch_size=3, chunk_size=16, show_progress=False)
    naive = []
    for encoded in prepare_heldout(Dataset.from_list(rows), tiny_tokenizer):
        naive += naive_token_scores(tiny_model, encoded["input_ids"], encoded["labels"])
    loss = -sum(s[0] for s in naive) / len(naive)
    assert result.tokens == len(naive) and result.examples == 7 and result.skipped_examples == 0
    assert result.loss == pytest.approx(loss, abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
    assert result.token_accuracy == pytest.approx(sum(s[2] for s in naive) / len(naive))
    ece = expected_calibration_error([s[1] for s in naive], [s[2] for s in naive], 15)
    assert result.ece == pytest.approx(ece, abs=1e-5)
    # assistant tokens only: fewer than all tokens after the first
    all_tokens = sum(len(ids) - 1 for ids in prepare_heldout(Dataset.from_list(rows), tiny_tokenizer)["input_ids"])
    assert 0 < result.tokens < all_tokens


def test_heldout_skips_examples_without_trainable_tokens_and_refuses_none(tiny_tokenizer, tiny_model):
    def chat(user, assistant):
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}

    rows = [chat("yes", "no"), chat("the patient has a fever " * 10, "rest"), chat("no", "yes")]
    result = heldout_metrics(
        tiny_model, tiny_tokenizer, rows, label_settings=LabelSettings(max_length=20), show_progress=False
    )
    assert (result.examples, result.skipped_examples) == (2, 1)  # the long prompt leaves no assistant token
    with pytest.raises(ValueError, match="None of the 3 held-out examples has a trainable token"):
        heldout_metrics(
            tiny_model, tiny_tokenizer, rows, label_settings=LabelSettings(max_length=3), show_progress=False
        )


def test_a_model_that_knows_the_answers_scores_full_marks(tiny_tokenizer):
    """Fit the tiny model on each MedQA prompt followed by its correct option's text (the prompt written here by
    hand, as lm-eval's medqa_4options shows it); the option_text tasks must then score 100%, letters need not."""
    from sftmix.evaluation import EvalConfig, evaluate

    questions = load_benchmark("medqa", str(DATA / "medqa_4options.jsonl"))
    model = build_tiny_llama(len(tiny_tokenizer), seed=2)
    rows = []
    for q in questions:
        options = "".join(f"{letter}. {text}\n" for letter, text in zip("ABCD", q.options, strict=True))
        prompt = tiny_tokenizer.encode(f"Question: {q.question}\n{options}Answer:")
        answer = tiny_tokenizer.encode(f"Answer: {q.options[q.answer]}", add_special_tokens=False)[2:]
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    batch = pad_batch([r[0] for r in rows], [r[1] for r in rows], 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss.backward()
        optimizer.step()
    model.eval()
    config = EvalConfig(benchmark_style="option_text", show_progress=False)
    results = evaluate(model, tiny_tokenizer, benchmarks={"medqa": str(DATA / "medqa_4options.jsonl")}, config=config)
    medqa = results["benchmarks"]["medqa"]
    assert (medqa["acc"], medqa["acc_norm"], medqa["questions"]) == (1.0, 1.0, 3)
