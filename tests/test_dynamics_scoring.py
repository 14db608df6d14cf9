"""The scoring pass: scores equal a naive computation, the scores file fits the trainer's contract, bad input."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset
from dynamics_helpers import byte_level_tokenizer, conversations, save_checkpoints, sft_config

from sftmix.dynamics import DynamicsConfig, compute_dynamics
from sftmix.dynamics.config import scoring_config
from sftmix.dynamics.examples import ROW_INDEX, with_row_index
from sftmix.dynamics.reference import DynamicsTrainer, prepare_examples
from sftmix.scores import attach_confidence, read_scores
from sftmix.testing import build_tiny_llama, make_conversations


def naive_scores(model, input_ids, labels):
    """Full logits, log-softmax, the label tokens after the causal shift: (perplexity, mean probability)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids])).logits[0, :-1].double()
    targets = torch.tensor(labels[1:])
    mask = targets != -100
    log_probs = torch.log_softmax(logits, dim=-1)[mask].gather(1, targets[mask][:, None])[:, 0]
    return torch.exp(-log_probs.mean()).item(), log_probs.exp().mean().item()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_score_equals_a_naive_computation_on_the_same_example(tmp_path, tiny_tokenizer, batch_size):
    model = build_tiny_llama(len(tiny_tokenizer), seed=3)
    config = scoring_config(sft_config(tmp_path), tmp_path)
    prepared = prepare_examples(with_row_index(conversations(9)), tiny_tokenizer, config)
    trainer = DynamicsTrainer(model, config, train_dataset=prepared, processing_class=tiny_tokenizer)
    scores = trainer.score(batch_size)
    assert scores.row_index.tolist() == prepared[ROW_INDEX] == list(range(9))
    for i, row in enumerate(prepared):
        perplexity, probability = naive_scores(model, row["input_ids"], row["labels"])
        assert scores.perplexity[i] == pytest.approx(perplexity, rel=1e-5)
        assert scores.mean_probability[i] == pytest.approx(probability, rel=1e-5)
        assert scores.num_tokens[i] == sum(label != -100 for label in row["labels"][1:])


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny_tokenizer):
    return save_checkpoints(tmp_path_factory.mktemp("checkpoints"), tiny_tokenizer, seeds=(0, 1))


def test_given_checkpoints_give_a_scores_file_the_trainer_accepts(tmp_path, tiny_tokenizer, two_checkpoints):
    import matplotlib
    from transformers import AutoModelForCausalLM

    data = conversations(12)
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints)
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's own backend
    try:
        path = compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
        assert matplotlib.get_backend() == "svg"  # the plots leave the caller's backend alone
    finally:
        matplotlib.use(backend)
    frame, metadata = read_scores(path)

    assert len(frame) == 12 and frame["row_index"].tolist() == list(range(12))
    assert metadata["num_checkpoints"] == 2 and metadata["excluded_ids"] == []
    perplexities = np.array(frame["perplexities"].tolist())
    prepared = prepare_examples(with_row_index(data), tiny_tokenizer, scoring_config(sft_config(tmp_path), tmp_path))
    for c, checkpoint in enumerate(two_checkpoints):
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        for row in prepared.select([0, 7]):
            expected, _ = naive_scores(model, row["input_ids"], row["labels"])
            assert perplexities[row[ROW_INDEX], c] == pytest.approx(expected, rel=1e-5)
    assert frame["confidence"].to_numpy() == pytest.approx(-perplexities.mean(axis=1))
    assert frame["confident"].sum() == 6
    assert frame.loc[frame["confident"], "confidence"].min() > frame.loc[~frame["confident"], "confidence"].max()
    for picture in ("data_map.png", "confidence_histogram.png"):
        assert (tmp_path / picture).stat().st_size > 1000

    attached = attach_confidence(data, path)
    assert attached["confident"] == frame.sort_values("row_index")["confident"].tolist()
    with pytest.raises(ValueError, match="made for other data"):
        attach_confidence(Dataset.from_list(make_conversations(12, seed=99)), path)


def test_examples_without_a_trainable_token_are_reported_and_excluded(
    tmp_path, tiny_tokenizer, two_checkpoints, caplog
):
    rows = make_conversations(10)
    long_prompt = " ".join(["what is the patient history"] * 30)  # fills max_length before the response starts
    for i in (2, 5):
        rows[i]["messages"][0]["content"] = long_prompt + f" {i}"
    data = Dataset.from_list(rows)
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints[:1])
    with caplog.at_level(logging.WARNING, logger="sftmix.dynamics"):
        path = compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
    frame, metadata = read_scores(path)
    from sftmix.scores import dataset_example_ids

    ids = dataset_example_ids(data)
    assert metadata["excluded_ids"] == [ids[2], ids[5]]
    assert sorted(frame["row_index"]) == [0, 1, 3, 4, 6, 7, 8, 9]
    assert "2 training example(s) have no trainable token" in caplog.text and ids[2] in caplog.text
    assert len(attach_confidence(data, path)) == 8  # the trainer drops them too


def test_a_missing_checkpoint_fails_before_any_work(tmp_path, tiny_tokenizer, two_checkpoints):
    args = DynamicsConfig(
        scores_path=str(tmp_path / "out" / "scores.parquet"),
        checkpoints=[two_checkpoints[0], str(tmp_path / "no-such-checkpoint")],
    )
    with pytest.raises(FileNotFoundError, match=r"no-such-checkpoint.*checkpoints\[1\]"):
        compute_dynamics(None, conversations(6), args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
    assert not (tmp_path / "out").exists()


def test_a_missing_reference_model_fails_before_any_work(tmp_path, tiny_tokenizer):
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), reference_model=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="reference_model"):
        compute_dynamics(None, conversations(6), args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))


def test_a_reference_model_is_checked_as_from_pretrained_reads_its_name(tmp_path, monkeypatch):
    """A bare Hub id (`gpt2`, no owner) is a Hub id as for `from_pretrained`; offline, it must be in the cache,
    where a Hub-cached adapter (adapter_config.json, no config.json) counts too."""
    import huggingface_hub.constants

    from sftmix.dynamics.examples import check_inputs

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    data = conversations(6)

    def check(name):
        args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), reference_model=name)
        return check_inputs(None, data, args)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert check("gpt2") == tmp_path / "scores.parquet"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("gpt2", "someone/adapter"):
        with pytest.raises(FileNotFoundError, match="reachable Hub id"):
            check(name)
    snapshot = cache / "models--someone--adapter" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "adapter_config.json").write_text("{}")
    (cache / "models--someone--adapter" / "refs").mkdir()
    (cache / "models--someone--adapter" / "refs" / "main").write_text("abc")
    assert check("someone/adapter") == tmp_path / "scores.parquet"


def test_a_dataset_too_small_to_split_is_a_clear_error(tmp_path, tiny_tokenizer, two_checkpoints):
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints[:1])
    with pytest.raises(ValueError, match="at least 2"):
        compute_dynamics(None, conversations(1), args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
    assert not any(tmp_path.glob("scores_checkpoints/*"))  # refused before scoring


def _checkpoint_with_tokenizer(directory, tokenizer):
    build_tiny_llama(len(tokenizer), seed=5).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_a_reference_with_another_tokenizer_must_keep_the_same_examples(tmp_path, tiny_tokenizer):
    reference = _checkpoint_with_tokenizer(tmp_path / "byte-level", byte_level_tokenizer())
    # The byte-level tokenizer needs ~3x more tokens: at max_length=48 it truncates away responses the target keeps
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=[reference])
    with pytest.raises(ValueError, match="tokenizer differs from the target's.*same examples") as error:
        compute_dynamics(
            None,
            conversations(8),
            args,
            processing_class=tiny_tokenizer,
            sft_args=sft_config(tmp_path, max_length=48),
        )
    assert "kept for the target but left with no trainable token" in str(error.value)


def test_a_reference_with_another_tokenizer_is_used_when_it_keeps_the_same_examples(tmp_path, tiny_tokenizer, caplog):
    reference = _checkpoint_with_tokenizer(tmp_path / "byte-level", byte_level_tokenizer())
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=[reference])
    with caplog.at_level(logging.WARNING, logger="sftmix.dynamics"):
        path = compute_dynamics(
            None,
            conversations(8),
            args,
            processing_class=tiny_tokenizer,
            sft_args=sft_config(tmp_path, max_length=512),
        )
    assert "tokenizes the training data differently" in caplog.text
    frame, _ = read_scores(path)
    assert len(frame) == 8


def test_confidence_is_response_perplexity_when_ntp_trains_on_every_token(tmp_path, tiny_tokenizer, two_checkpoints):
    """NTP on every token (`assistant_only_loss=False`): scores still cover the assistant replies only, found here
    by scanning the token ids for ChatML markers (the paper's Conf = -mean response perplexity)."""
    from test_trainer_response import assistant_turns, multi_turn

    data = multi_turn(12).remove_columns("confident")
    sft = sft_config(tmp_path / "sft", assistant_only_loss=False, max_length=128)
    path = compute_dynamics(
        None,
        data,
        DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints),
        processing_class=tiny_tokenizer,
        sft_args=sft,
    )
    frame, _ = read_scores(path)
    models = [build_tiny_llama(len(tiny_tokenizer), seed=seed) for seed in (0, 1)]
    prepared = prepare_examples(with_row_index(data), tiny_tokenizer, scoring_config(sft, tmp_path))
    assert all(all(label != -100 for label in row["labels"][1:]) for row in prepared)  # NTP: every token
    for row in prepared:
        ids = torch.tensor(row["input_ids"])
        positions = [p for turn in assistant_turns(ids, tiny_tokenizer) for p in turn]
        response_labels = [t if p in positions else -100 for p, t in enumerate(row["input_ids"])]
        perplexities = [naive_scores(model, row["input_ids"], response_labels)[0] for model in models]
        everything = naive_scores(models[0], row["input_ids"], row["labels"])[0]
        scored = frame.iloc[row[ROW_INDEX]]
        assert scored["perplexities"].tolist() == pytest.approx(perplexities, rel=1e-5)
        assert scored["confidence"] == pytest.approx(-np.mean(perplexities), rel=1e-5)
        assert scored["num_tokens"] == len(positions)
        assert abs(everything - perplexities[0]) > 1e-3  # the whole sequence would score differently


def test_the_least_confident_examples_are_listed_for_review(tmp_path, tiny_tokenizer, two_checkpoints):
    import pandas as pd

    from sftmix.data import set_error_excerpts

    data = conversations(12)
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints, review_size=4)
    path = compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
    frame, _ = read_scores(path)
    review = pd.read_csv(tmp_path / "review.csv")
    lowest = sorted(zip(frame["confidence"], frame["example_id"], frame["row_index"], strict=True))[:4]
    assert review["example_id"].tolist() == [i for _, i, _ in lowest]
    assert review["confidence"].tolist() == pytest.approx([c for c, _, _ in lowest])
    first = data[int(lowest[0][2])]["messages"][-1]["content"]  # the response of the least confident example
    assert first[:20] in review["response"][0]
    markdown = (tmp_path / "review.md").read_text()
    assert "| 1 | `" + str(lowest[0][1]) + "` |" in markdown and first[:20] in markdown
    set_error_excerpts(False)
    try:
        args = DynamicsConfig(scores_path=str(tmp_path / "b" / "scores.parquet"), checkpoints=two_checkpoints)
        compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
    finally:
        set_error_excerpts(True)
    hidden = pd.read_csv(tmp_path / "b" / "review.csv")
    assert len(hidden) == 12 and hidden["response"].str.contains("excerpt hidden").all()  # default 20 > 12 rows
    with pytest.raises(ValueError, match="`review_size` must be >= 0"):
        DynamicsConfig(review_size=-1)


def naive_alone_perplexity(model, start, tokens):
    """The response tokens alone after `start`: full logits, every response token scored."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[start, *tokens]])).logits[0, :-1].double()
    log_probs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(tokens)[:, None])[:, 0]
    return torch.exp(-log_probs.mean()).item()


def test_ifd_confidence_equals_a_naive_computation_on_multi_turn_data(tmp_path, tiny_tokenizer, two_checkpoints):
    """`confidence: ifd`: each checkpoint's IFD = response perplexity given the prompt / perplexity of the response
    tokens alone (every assistant turn, no prompt, after BOS or EOS); confidence = minus its mean; the paper's
    perplexities stay in the file, and the split ranks by IFD."""
    from test_trainer_response import assistant_turns, multi_turn

    data = multi_turn(12).remove_columns("confident")
    sft = sft_config(tmp_path / "sft", max_length=128)
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints, confidence="ifd")
    frame, metadata = read_scores(compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft))
    start = tiny_tokenizer.bos_token_id if tiny_tokenizer.bos_token_id is not None else tiny_tokenizer.eos_token_id
    models = [build_tiny_llama(len(tiny_tokenizer), seed=seed) for seed in (0, 1)]
    prepared = prepare_examples(with_row_index(data), tiny_tokenizer, scoring_config(sft, tmp_path))
    expected = {}
    for row in prepared:
        ids = torch.tensor(row["input_ids"])
        positions = [p for turn in assistant_turns(ids, tiny_tokenizer) for p in turn]
        assert len({row["input_ids"][p] for p in positions}) > 1 and min(positions) > 0
        labels = [t if p in positions else -100 for p, t in enumerate(row["input_ids"])]
        tokens = [row["input_ids"][p] for p in positions]
        perplexities = [naive_scores(model, row["input_ids"], labels)[0] for model in models]
        ifds = [ppl / naive_alone_perplexity(m, start, tokens) for ppl, m in zip(perplexities, models, strict=True)]
        scored = frame.iloc[row[ROW_INDEX]]
        assert scored["perplexities"].tolist() == pytest.approx(perplexities, rel=1e-5)
        assert scored["ifds"].tolist() == pytest.approx(ifds, rel=1e-5)
        assert scored["ifd"] == pytest.approx(np.mean(ifds), rel=1e-5)
        assert scored["confidence"] == pytest.approx(-np.mean(ifds), rel=1e-5)
        expected[scored["example_id"]] = -np.mean(ifds)
    top = sorted(expected, key=lambda i: (-expected[i], i))[:6]
    assert sorted(frame.loc[frame["confident"], "example_id"]) == sorted(top)
    assert metadata["settings"]["confidence"] == "ifd"
    assert (tmp_path / "data_map.png").is_file() and "IFD" in (tmp_path / "review.md").read_text()

    # the cached paper-mode scores lack the prompt-free forward: an IFD pass over them rescores
    plain = DynamicsConfig(scores_path=str(tmp_path / "p" / "scores.parquet"), checkpoints=two_checkpoints)
    compute_dynamics(None, data, plain, processing_class=tiny_tokenizer, sft_args=sft)
    assert "ifd" not in read_scores(plain.scores_path)[0]
    args.scores_path = plain.scores_path
    frame_again, _ = read_scores(compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft))
    assert frame_again["ifd"].tolist() == pytest.approx(frame["ifd"].tolist(), rel=1e-9)


def test_ifd_is_refused_where_it_cannot_be_computed(tmp_path, tiny_tokenizer, two_checkpoints):
    with pytest.raises(ValueError, match="use it with `mode: reference`"):
        DynamicsConfig(mode="training", confidence="ifd")
    with pytest.raises(ValueError, match="`confidence` must be 'perplexity' or 'ifd'"):
        DynamicsConfig(confidence="IFD")
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), checkpoints=two_checkpoints, confidence="ifd")
    from helpers import cpu_settings

    from sftmix import SFTMixConfig

    sft = SFTMixConfig(str(tmp_path / "sft"), **cpu_settings(max_steps=4, mixup_text_as_response=True))
    with pytest.raises(ValueError, match="makes the whole text the response"):
        compute_dynamics(None, conversations(6), args, processing_class=tiny_tokenizer, sft_args=sft)


def test_the_callers_training_config_is_left_as_given(tmp_path, tiny_tokenizer):
    """`assistant_only_loss=None` is resolved for the pass (True on conversations), on a copy of the caller's config."""
    from helpers import cpu_settings

    from sftmix import SFTMixConfig

    sft = SFTMixConfig(str(tmp_path / "run"), **cpu_settings(assistant_only_loss=None))
    before = sft.to_dict()
    args = DynamicsConfig(scores_path=str(tmp_path / "scores.parquet"), split="random")
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    path = compute_dynamics(model, conversations(8), args, processing_class=tiny_tokenizer, sft_args=sft)
    assert read_scores(path)[1]["tokenization"]["assistant_only_loss"] is True
    assert sft.assistant_only_loss is None
    assert sft.to_dict() == before
