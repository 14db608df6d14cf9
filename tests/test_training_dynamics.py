"""`training_dynamics` (`dynamics.mode: training`): the confidence recorded from the training forward equals a naive
per-example computation on the same weights, the groups and pairs are the ones a naive median gives, two processes
record and train as one, and a run resumed in either phase ends as an uninterrupted one."""

import json
import math
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import LAUNCH, conversations, cpu_args, tiny_model
from safetensors.torch import load_file
from test_mixup import naive_mixup_sum
from test_resume_cli import sftmix, write_recipe
from test_trainer_loss import naive_step_loss

from sftmix import SFTMixTrainer
from sftmix.collator import CONFIDENT_KEY, ROW_KEY


def naive_nll(model, batch):
    """Per row: the number of (shifted) trained tokens and their mean NLL, from full fp64 logits."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_probs = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    tokens = mask.sum(1)
    return tokens, -(picked * mask).sum(1) / tokens


def frozen_run(tmp_path, tokenizer, n, **overrides):
    """A `training_dynamics` run with learning rate 0: every forward sees the initial weights, which the test
    then uses for its own computation."""
    model = tiny_model(tokenizer)
    args = cpu_args(
        tmp_path,
        training_dynamics=True,
        learning_rate=0.0,
        max_steps=-1,
        mixup_lambda=0.3,
        mixup_weight=0.2,
        **overrides,
    )
    trainer = SFTMixTrainer(model, args, train_dataset=conversations(n), processing_class=tokenizer)
    trainer.train()
    model.eval()
    return trainer, model, pd.read_parquet(tmp_path / "_dynamics" / "scores.parquet")


def epoch_batches(trainer, epoch):
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)
    return list(loader)


def losses_by_step(trainer):
    return {h["step"]: h for h in trainer.state.log_history if "loss" in h}


def test_one_epoch_records_then_labels_each_micro_batch_against_the_recent_median(tmp_path, tiny_tokenizer):
    trainer, model, frame = frozen_run(tmp_path, tiny_tokenizer, 32, num_train_epochs=1)
    batches = epoch_batches(trainer, 0)
    assert len(batches) == 8  # plain SFT's number of steps: 32 examples / 4
    nll = [naive_nll(model, batch) for batch in batches]

    # Every example recorded once, at the weights it was trained on: perplexity = exp(mean response NLL)
    expected = {
        row: math.exp(value)
        for batch, (_, values) in zip(batches, nll, strict=True)
        for row, value in zip(batch[ROW_KEY].tolist(), values.tolist(), strict=True)
    }
    got = dict(zip(frame["row_index"].tolist(), frame["perplexities"].str[0].tolist(), strict=True))
    assert got.keys() == expected.keys() and len(got) == 32
    for row, value in expected.items():
        assert got[row] == pytest.approx(value, rel=1e-5), row
    ranked = sorted(expected, key=expected.get)  # lowest perplexity first (no ties in these data)
    assert set(frame.loc[frame["confident"], "row_index"]) == set(ranked[:16])

    # 2 warm-up steps (0.25 x 8) of plain NTP; then each micro-batch labelled against the median of the last 2 steps
    logs, window, mixed_steps = losses_by_step(trainer), 2, 0
    for step, (batch, (tokens, values)) in enumerate(zip(batches, nll, strict=True)):
        labels = batch["labels"][:, 1:]
        with torch.no_grad():
            hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0][:, :-1]
            logits = hidden.double() @ model.lm_head.weight.double().T
        ntp = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        log = logs[step + 1]
        if step < window:
            assert "mixup_loss" not in log
            assert log["loss"] == pytest.approx(ntp.item(), rel=1e-5)
            continue
        threshold = np.median(torch.cat([nll[s][1] for s in range(step - window, step)]).numpy())
        confident = values < threshold
        k = min(int(confident.sum()), int((~confident).sum()))
        rows = [*confident.nonzero().flatten()[:k].tolist(), *(~confident).nonzero().flatten()[:k].tolist()]
        flags = torch.tensor([True] * k + [False] * k)
        mixup = naive_mixup_sum(hidden[rows], labels[rows], flags, [0.3] * k, model.lm_head.weight)
        mixed = sum(min(int(tokens[rows[i]]), int(tokens[rows[k + i]])) for i in range(k))
        assert log["mixed_tokens"] == mixed, step
        mixed_steps += mixed > 0
        assert log["loss"] == pytest.approx((ntp + 0.2 * mixup / max(mixed, 1)).item(), rel=1e-5), step
    assert mixed_steps >= 3  # the Mixup term really ran


def test_later_epochs_pair_by_the_median_split_of_the_epochs_before(tmp_path, tiny_tokenizer):
    trainer, model, frame = frozen_run(tmp_path, tiny_tokenizer, 16, num_train_epochs=3)
    first = epoch_batches(trainer, 0)
    perplexity = {}
    for batch in first:
        _, values = naive_nll(model, batch)
        perplexity.update(zip(batch[ROW_KEY].tolist(), values.exp().tolist(), strict=True))
    confident_rows = set(sorted(perplexity, key=perplexity.get)[:8])
    # The scores file: one column per epoch, all equal at frozen weights; the confident half by naive perplexity
    assert list(frame["perplexities"].str.len().unique()) == [3]
    for row, values in zip(frame["row_index"], frame["perplexities"], strict=True):
        assert values == pytest.approx([perplexity[row]] * 3, rel=1e-5)
    assert set(frame.loc[frame["confident"], "row_index"]) == confident_rows

    logs = losses_by_step(trainer)
    for step in range(1, 5):  # epoch 1: plain NTP
        assert "mixup_loss" not in logs[step]
    for epoch in (1, 2):  # every micro-batch: 2 confident + 2 unconfident by the naive split, paired in order
        for i, batch in enumerate(epoch_batches(trainer, epoch)):
            batch[CONFIDENT_KEY] = torch.tensor([r in confident_rows for r in batch[ROW_KEY].tolist()])
            assert batch[CONFIDENT_KEY].tolist() == [True, True, False, False]
            expected = naive_step_loss(model, batch, torch.tensor([0.3, 0.3]), mixup_weight=0.2)
            assert logs[4 * epoch + i + 1]["loss"] == pytest.approx(expected.item(), rel=1e-5)


def recipe_with_recorded_dynamics(tmp_path, model_dir, epochs):
    recipe = write_recipe(tmp_path, model_dir)
    text = recipe.read_text().replace("max_steps: 4", "max_steps: -1")
    text += "dynamics:\n  mode: training\n"
    if epochs == 1:  # 8 steps: warm-up 4 (checkpoint-2 inside it), in-batch pairs after (checkpoint-6)
        text += "training_dynamics_warmup_ratio: 0.5\nnum_train_epochs: 1\n"
    else:  # 16 examples, 4 steps an epoch: checkpoint-2 in the NTP epoch, checkpoint-6 in the first pair epoch
        text += "num_train_epochs: 3\nmax_train_samples: 16\n"
    recipe.write_text(text)
    return recipe


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 3])
def test_resumed_in_either_phase_ends_as_an_uninterrupted_run(tmp_path, tiny_model_dir, epochs):
    recipe = recipe_with_recorded_dynamics(tmp_path, tiny_model_dir, epochs)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = sftmix("check", "--config", recipe)
    assert "dynamics (training): recorded from the SFTMix run's own forward" in done.stdout
    whole = tmp_path / "whole"
    sftmix("run", "--config", recipe, "--output_dir", whole)
    frame = pd.read_parquet(whole / "_dynamics" / "scores.parquet")
    assert len(frame) == (32 if epochs == 1 else 16) and frame["confident"].sum() == len(frame) // 2
    assert (whole / "_dynamics" / "data_map.png").is_file() and (whole / "_dynamics" / "review.md").is_file()
    assert not (whole / "_dynamics" / "reference").exists()  # no reference run
    history = json.loads((whole / "trainer_state.json").read_text())["log_history"]
    assert any(h.get("mixed_tokens", 0) > 0 for h in history)
    for step in (2, 6) if epochs == 1 else (6,):  # pre-empted in the NTP phase, and in the Mixup phase
        resumed = tmp_path / f"resumed-{step}"
        resumed.mkdir()
        shutil.copytree(whole / f"checkpoint-{step}", resumed / f"checkpoint-{step}")
        sftmix("run", "--config", recipe, "--output_dir", resumed, "--resume_from_checkpoint", "true")
        expected, got = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=f"{step} {name}")
        again = pd.read_parquet(resumed / "_dynamics" / "scores.parquet")
        assert again["confident"].tolist() == frame["confident"].tolist()
        np.testing.assert_allclose(np.stack(again["perplexities"]), np.stack(frame["perplexities"]), rtol=1e-6)
        logs = json.loads((resumed / "trainer_state.json").read_text())["log_history"]
        for a, b in zip(history, logs, strict=True):
            for key in ("loss", "mixup_loss", "mixed_tokens"):
                if key in a:
                    assert b[key] == pytest.approx(a[key], rel=1e-5), (step, key, a, b)


def test_sftmix_dynamics_refuses_the_training_mode_and_online_is_gone(tmp_path, tiny_model_dir):
    recipe = recipe_with_recorded_dynamics(tmp_path, tiny_model_dir, 1)
    done = sftmix("dynamics", "--config", recipe, check=False)
    assert done.returncode == 1 and "there is no separate dynamics pass" in done.stderr
    from sftmix.dynamics import DynamicsConfig

    with pytest.raises(ValueError, match="`mode: online` was replaced by `mode: training`"):
        DynamicsConfig(mode="online")


@pytest.mark.slow
@pytest.mark.parametrize("length", ["max_steps=4", "num_train_epochs=2"])
def test_two_processes_record_and_train_as_one(tmp_path, length):
    """In-batch labels (4 steps, 2 of warm-up): each process labels its own micro-batch against the gathered table.
    Two epochs: the second epoch's pairs come from the median split of the first, the same on every process."""
    from test_distributed import BACKENDS, assert_same_training, run

    common = ["training_dynamics=true", "training_dynamics_warmup_ratio=0.5", length]
    common += ["max_steps=-1"] if length.startswith("num_train_epochs") else []
    single = run(
        [sys.executable],
        tmp_path / "one",
        "per_device_train_batch_size=2",
        "gradient_accumulation_steps=2",
        *common,
    )[0]
    ranks = run(
        [*LAUNCH, *BACKENDS["ddp"], "--num_processes", "2"],
        tmp_path / "two",
        "per_device_train_batch_size=2",
        *common,
    )
    assert ranks[0]["world_size"] == 2 and single["logs"]
    assert_same_training(ranks[0], single)
    one = pd.read_parquet(tmp_path / "one" / "_dynamics" / "scores.parquet")
    two = pd.read_parquet(tmp_path / "two" / "_dynamics" / "scores.parquet")
    assert two["row_index"].tolist() == one["row_index"].tolist()
    assert two["confident"].tolist() == one["confident"].tolist()
    np.testing.assert_allclose(np.stack(two["perplexities"]), np.stack(one["perplexities"]), rtol=1e-5)
    if length.startswith("num_train_epochs"):  # epoch 1 plain NTP, epoch 2 mixed pairs; one column per epoch
        assert {len(p) for p in two["perplexities"]} == {2}
        steps = [h["step"] for h in single["logs"]]  # the steps that logged a Mixup term: all of epoch 2's
        assert steps == list(range(len(steps) + 1, 2 * len(steps) + 1))
        assert all(h["epoch"] > 1 and h["mixed_tokens"] > 0 for h in single["logs"])
