"""The reference run and resuming: checkpoints evenly spaced, nothing retrained or rescored that is already done."""

import numpy as np
import pytest
from dynamics_helpers import conversations, sft_config

from sftmix.dynamics import DynamicsConfig, compute_dynamics
from sftmix.dynamics.reference import DynamicsTrainer
from sftmix.scores import read_scores
from sftmix.testing import build_tiny_llama


@pytest.fixture
def calls(monkeypatch):
    """Counts reference trainings and scoring passes (with the step or checkpoint each one scored)."""
    counts = {"train": [], "score": []}
    train, score = DynamicsTrainer.train, DynamicsTrainer.score

    def counting_train(self, *args, **kwargs):
        counts["train"].append(kwargs.get("resume_from_checkpoint"))
        return train(self, *args, **kwargs)

    def counting_score(self, batch_size, desc="Scoring", **kwargs):
        counts["score"].append(desc.removeprefix("Scoring "))
        return score(self, batch_size, desc, **kwargs)

    monkeypatch.setattr(DynamicsTrainer, "train", counting_train)
    monkeypatch.setattr(DynamicsTrainer, "score", counting_score)
    return counts


def run(tmp_path, tokenizer, **settings):
    # six steps (1.5 epochs: longer than the default one-epoch reference), checkpoints kept to rescore from disk
    settings = {"reference_max_steps": 6, "keep_reference_checkpoints": True, **settings}
    args = DynamicsConfig(scores_path=str(tmp_path / "_dynamics" / "scores.parquet"), num_checkpoints=2, **settings)
    model = build_tiny_llama(len(tokenizer), seed=0)
    sft = sft_config(tmp_path / "run", per_device_train_batch_size=4, max_steps=6)
    return compute_dynamics(model, conversations(16), args, processing_class=tokenizer, sft_args=sft)


def test_reference_run_scores_evenly_spaced_checkpoints_and_resumes_without_redoing_work(
    tmp_path, tiny_tokenizer, calls
):
    path = run(tmp_path, tiny_tokenizer)
    frame, metadata = read_scores(path)
    assert [c["label"] for c in metadata["checkpoints"]] == ["checkpoint-3", "checkpoint-6"]
    assert calls == {"train": [None], "score": ["checkpoint-3", "checkpoint-6"]}
    perplexities = np.array(frame["perplexities"].tolist())
    assert (perplexities[:, 1] < perplexities[:, 0]).mean() > 0.9  # the reference learned between checkpoints
    scores_mtime = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "_dynamics" / "scores_checkpoints").iterdir()}

    # Everything done: neither training nor scoring runs again, the same file comes out
    calls["train"].clear(), calls["score"].clear()
    run(tmp_path, tiny_tokenizer)
    assert calls == {"train": [], "score": []}
    assert {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "_dynamics" / "scores_checkpoints").iterdir()
    } == scores_mtime
    np.testing.assert_array_equal(np.array(read_scores(path)[0]["perplexities"].tolist()), perplexities)

    # Interrupted while scoring the last checkpoint: only it is scored, from disk, to the same numbers
    (tmp_path / "_dynamics" / "scores_checkpoints" / "001-checkpoint-6.parquet").unlink()
    run(tmp_path, tiny_tokenizer)
    assert calls == {"train": [], "score": ["checkpoint-6"]}
    again = np.array(read_scores(path)[0]["perplexities"].tolist())
    np.testing.assert_allclose(again, perplexities, rtol=1e-6)


def test_training_interrupted_after_a_scored_checkpoint_resumes_from_it(tmp_path, tiny_tokenizer, calls, monkeypatch):
    from sftmix.dynamics import reference

    on_save = reference.CheckpointCallback.on_save

    def crash_at_the_last_checkpoint(self, args, state, control, **kwargs):
        if state.global_step == 6:
            raise KeyboardInterrupt
        return on_save(self, args, state, control, **kwargs)

    monkeypatch.setattr(reference.CheckpointCallback, "on_save", crash_at_the_last_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_tokenizer)
    monkeypatch.setattr(reference.CheckpointCallback, "on_save", on_save)
    calls["train"].clear(), calls["score"].clear()
    (tmp_path / "_dynamics" / "reference" / "checkpoint-6" / "trainer_state.json").unlink()  # saved only in part

    path = run(tmp_path, tiny_tokenizer)
    resumed_from = calls["train"][0]
    assert resumed_from is not None and resumed_from.endswith("checkpoint-3")
    assert calls["score"] == ["checkpoint-6"]
    uninterrupted = run(tmp_path / "fresh", tiny_tokenizer)
    np.testing.assert_allclose(
        np.array(read_scores(path)[0]["perplexities"].tolist()),
        np.array(read_scores(uninterrupted)[0]["perplexities"].tolist()),
        rtol=1e-5,
    )


def test_changed_training_settings_invalidate_checkpoints_and_scores(tmp_path, tiny_tokenizer, calls):
    run(tmp_path, tiny_tokenizer)
    calls["train"].clear(), calls["score"].clear()
    args = DynamicsConfig(
        scores_path=str(tmp_path / "_dynamics" / "scores.parquet"), num_checkpoints=2, reference_max_steps=4
    )
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    path = compute_dynamics(
        model, conversations(16), args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path / "run")
    )
    assert calls == {"train": [None], "score": ["checkpoint-2", "checkpoint-4"]}
    assert [c["label"] for c in read_scores(path)[1]["checkpoints"]] == ["checkpoint-2", "checkpoint-4"]


def test_lora_reference_run_scores_adapters_live_and_from_disk_alike(tmp_path, tiny_tokenizer, calls):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    args = DynamicsConfig(
        scores_path=str(tmp_path / "scores.parquet"),
        num_checkpoints=2,
        reference_max_steps=4,
        keep_reference_checkpoints=True,
    )
    sft = sft_config(tmp_path / "run", max_steps=4)

    def run_lora():
        model = build_tiny_llama(len(tiny_tokenizer), seed=0)
        return compute_dynamics(
            model, conversations(12), args, processing_class=tiny_tokenizer, sft_args=sft, peft_config=lora
        )

    path = run_lora()
    live = np.array(read_scores(path)[0]["perplexities"].tolist())
    assert (tmp_path / "reference" / "checkpoint-4" / "adapter_config.json").is_file()
    (tmp_path / "scores_checkpoints" / "000-checkpoint-2.parquet").unlink()
    calls["train"].clear(), calls["score"].clear()
    run_lora()  # the base model in memory plus the saved adapter
    assert calls == {"train": [], "score": ["checkpoint-2"]}
    np.testing.assert_allclose(np.array(read_scores(path)[0]["perplexities"].tolist()), live, rtol=1e-6)
    assert not np.allclose(live[:, 0], live[:, 1])  # the adapter weights differ between checkpoints


def test_the_default_reference_run_lasts_one_epoch_and_its_checkpoints_go_once_scored(tmp_path, tiny_tokenizer, calls):
    """16 examples, batch 4: one epoch is 4 steps, although the SFTMix run is 3 epochs (12 steps)."""
    args = DynamicsConfig(scores_path=str(tmp_path / "_dynamics" / "scores.parquet"), num_checkpoints=2)
    sft = sft_config(tmp_path / "run", per_device_train_batch_size=4, max_steps=-1, num_train_epochs=3)
    model = build_tiny_llama(len(tiny_tokenizer), seed=0)
    path = compute_dynamics(model, conversations(16), args, processing_class=tiny_tokenizer, sft_args=sft)
    assert [c["label"] for c in read_scores(path)[1]["checkpoints"]] == ["checkpoint-2", "checkpoint-4"]
    assert not list((tmp_path / "_dynamics" / "reference").glob("checkpoint-*"))  # deleted once scored
    # run again: the scores are cached, nothing is retrained although the checkpoints are gone
    calls["train"].clear(), calls["score"].clear()
    compute_dynamics(model, conversations(16), args, processing_class=tiny_tokenizer, sft_args=sft)
    assert calls == {"train": [], "score": []}
