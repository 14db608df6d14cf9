"""Resuming through the command line: `--resume_from_checkpoint` ends with the weights of an uninterrupted run, an
earlier run's checkpoints are never overwritten silently, and `sftmix run` resumes each stage where it stopped."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sftmix.testing import make_conversations

ROOT = Path(__file__).parents[1]


def write_recipe(tmp_path, model_dir):
    rows = make_conversations(32, seed=3)
    for i, row in enumerate(rows):
        row["confident"] = i % 2 == 0  # the confidence column itself: no dynamics pass needed for `sftmix train`
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "\n".join(
            [
                f"model_name_or_path: {model_dir}",
                f"dataset_files: [{data}]",
                "bf16: false",
                "max_length: 64",
                "per_device_train_batch_size: 4",
                "max_steps: 4",
                "learning_rate: 1.0e-3",
                "lr_scheduler_type: cosine",
                "warmup_steps: 1",
                "gradient_checkpointing: false",
                "assistant_only_loss: true",
                "logging_steps: 1",
                "save_strategy: steps",
                "save_steps: 2",
                "report_to: none",
                "dataset_num_proc: null",
                "disable_tqdm: true",
                "mixup_weight: 0.5",
                "seed: 7",
                f"output_dir: {tmp_path / 'unused'}",
            ]
        )
        + "\n"
    )
    return recipe


def sftmix(*args, check=True):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sftmix", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@pytest.mark.slow
def test_a_resumed_train_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    sftmix("train", "--config", recipe, "--output_dir", whole)
    assert (whole / "checkpoint-2").is_dir() and (whole / "checkpoint-4").is_dir()

    # Pre-empted after step 2: only checkpoint-2 is on disk
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    saved_at = (resumed / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns
    sftmix("train", "--config", recipe, "--output_dir", resumed, "--resume_from_checkpoint", "true")
    # Steps 1-2 were not run again (a restart at step 0 would have saved checkpoint-2 anew)
    assert (resumed / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == saved_at
    state = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [
        1,
        2,
        3,
        4,
    ]  # steps 1-2 from checkpoint-2

    expected, got = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    uninterrupted = json.loads((whole / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    for a, b in zip(uninterrupted, state["log_history"], strict=True):  # same pairing, lambdas and schedule
        for key in ("loss", "mixup_loss", "mixup_lambda", "learning_rate"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)

    # The same command again, without a resume flag: refused before any model loads, nothing overwritten
    before = (whole / "checkpoint-4" / "trainer_state.json").stat().st_mtime_ns
    done = sftmix("train", "--config", recipe, "--output_dir", whole, check=False)
    assert done.returncode == 1
    assert "already holds checkpoints of an earlier run" in done.stderr
    assert "--resume_from_checkpoint true" in done.stderr and "--overwrite_output_dir true" in done.stderr
    assert "Traceback" not in done.stderr
    assert (whole / "checkpoint-4" / "trainer_state.json").stat().st_mtime_ns == before

    # A checkpoint path that is not one: a clear error, exit status 1
    done = sftmix(
        "train",
        "--config",
        recipe,
        "--output_dir",
        resumed,
        "--resume_from_checkpoint",
        tmp_path / "nope",
        check=False,
    )
    assert done.returncode == 1 and "not a complete checkpoint directory" in done.stderr


@pytest.mark.slow
def test_killed_after_the_scores_file_and_resumed_leaves_what_an_uninterrupted_run_leaves(tmp_path, tiny_model_dir):
    """Killed between writing the scores file and deleting the reference checkpoints, then resumed: the finished
    run holds the same files (no `_dynamics/reference/checkpoint-*` left) and the same weights."""
    recipe = write_recipe(tmp_path, tiny_model_dir)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    options = ["--save_strategy", "no", "--dynamics.num_checkpoints", "2"]
    sftmix("run", "--config", recipe, "--output_dir", whole, *options)
    # The state on disk at that kill point: the scores file written, the scored checkpoints still there
    sftmix(
        "dynamics",
        "--config",
        recipe,
        "--output_dir",
        killed,
        *options,
        "--dynamics.keep_reference_checkpoints",
        "true",
    )
    assert list((killed / "_dynamics" / "reference").glob("checkpoint-*"))
    sftmix("run", "--config", recipe, "--output_dir", killed, *options, "--resume_from_checkpoint", "true")

    def files(directory):
        return sorted(
            str(p.relative_to(directory)) for p in directory.rglob("*") if "scores_checkpoints" not in str(p)
        )

    assert not list((killed / "_dynamics" / "reference").glob("checkpoint-*"))
    assert files(killed) == files(whole)
    expected, got = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
