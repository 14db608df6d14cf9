"""`sftmix run` on a recipe, end to end (dynamics -> SFTMix -> evaluation) with the tiny model, as users run it:
in one process, and with the shipped accelerate config for DeepSpeed ZeRO-3 on 2 CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import free_port

from sftmix.testing import make_conversations

ROOT = Path(__file__).parents[1]


def write_recipe(tmp_path, model_dir, **extra):
    """A recipe for the tiny model; `extra` top-level keys replace the defaults below or are added."""
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in make_conversations(40, seed=1)))
    out = tmp_path / "out"
    lines = [
        f"model_name_or_path: {model_dir}",
        f"dataset_files: [{data}]",
        "eval_fraction: 0.2",
        "bf16: false",
        "max_length: 64",
        "per_device_train_batch_size: 4",
        "num_train_epochs: 1",
        "learning_rate: 1.0e-3",
        "gradient_checkpointing: false",
        "assistant_only_loss: true",
        "logging_steps: 1",
        'save_strategy: "no"',
        "report_to: none",
        "dataset_num_proc: null",
        f"output_dir: {out}",
        "mixup_weight: 0.2",
        "dynamics:",
        "  num_checkpoints: 2",
        "  scoring_batch_size: 8",
        "evaluation:",
        "  heldout_split: true",
        f"  medqa: {ROOT / 'tests/data/medqa_4options.jsonl'}",
    ]
    lines = [line for line in lines if line.partition(":")[0] not in extra]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    return recipe, out


def run(cmd, timeout=600):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def check_outputs(out: Path):
    scores = pd.read_parquet(out / "_dynamics" / "scores.parquet")
    assert len(scores) > 0 and scores["confident"].sum() == len(scores) // 2
    assert (out / "_dynamics" / "data_map.png").is_file()
    assert "least confident training examples" in (out / "_dynamics" / "review.md").read_text()
    assert (out / "model.safetensors").is_file()
    summary = json.loads((out / "sftmix_summary.json").read_text())
    assert summary["confident_examples"] > 0 and summary["unconfident_examples"] > 0
    reports = list(out.glob("eval/*.json"))
    assert reports, list(out.iterdir())
    return summary


@pytest.mark.slow
def test_sftmix_run_one_process(tmp_path, tiny_model_dir):
    recipe, out = write_recipe(tmp_path, tiny_model_dir)
    done = run([sys.executable, "-m", "sftmix", "run", "--config", str(recipe)])
    assert "SFTMix summary" in done.stdout
    check_outputs(out)


@pytest.mark.slow
def test_sftmix_run_with_the_shipped_zero3_config_on_two_processes(tmp_path, tiny_model_dir):
    recipe, out = write_recipe(tmp_path, tiny_model_dir)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "accelerate_configs/zero3.yaml",
        "--main_process_port",
        str(free_port()),
    ]
    run([*launch, "--num_processes", "2", "-m", "sftmix", "run", "--config", str(recipe)])
    check_outputs(out)


@pytest.mark.slow
def test_the_random_split_ablation_runs_no_reference_and_no_scoring(tmp_path, tiny_model_dir):
    """`--dynamics.split random` from another directory: a seeded permutation, no reference run (no reference
    checkpoints, no scored checkpoints), then SFTMix training on that split; the same seed draws the same split."""
    recipe, out = write_recipe(tmp_path, tiny_model_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [sys.executable, "-m", "sftmix", "run", "--config", str(recipe), "--dynamics.split", "random"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    assert "Random split (split_seed 0)" in done.stderr and "Reference run" not in done.stderr
    assert not (out / "_dynamics" / "reference").exists()  # no reference run
    assert not list((out / "_dynamics").rglob("*checkpoint-*"))  # nothing scored
    scores = pd.read_parquet(out / "_dynamics" / "scores.parquet")
    assert scores["confident"].sum() == len(scores) // 2 and scores["confidence"].isna().all()
    assert (out / "model.safetensors").is_file()
    from sftmix.dynamics.split import split_confident

    ids = scores["example_id"].tolist()
    assert scores["confident"].tolist() == list(split_confident([0.0] * len(ids), ids, 0.5, 0))


@pytest.mark.slow
def test_sftmix_dynamics_by_ifd_from_another_directory_and_again(tmp_path, tiny_model_dir):
    """`sftmix check` and `sftmix dynamics --dynamics.confidence ifd` as a user types them, from another directory:
    the plan names the second forward, the scores file ranks by IFD beside the paper's perplexities, and running
    the command again (as after an interruption) rescores nothing and leaves the same file."""
    recipe, out = write_recipe(tmp_path, tiny_model_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])

    def sftmix(*args):
        cmd = [sys.executable, "-m", "sftmix", *args, "--config", str(recipe), "--dynamics.confidence", "ifd"]
        done = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
        return done

    assert "confidence by IFD" in sftmix("check").stdout
    first = sftmix("dynamics")
    scores = pd.read_parquet(out / "_dynamics" / "scores.parquet")
    assert len(scores) > 0 and scores["confident"].sum() == len(scores) // 2
    assert scores["confidence"].tolist() == pytest.approx((-scores["ifd"]).tolist())
    assert all(len(p) == 2 == len(i) for p, i in zip(scores["perplexities"], scores["ifds"], strict=True))
    assert scores.loc[scores["confident"], "ifd"].max() <= scores.loc[~scores["confident"], "ifd"].min()
    assert "Scoring" in first.stderr
    again = sftmix("dynamics")
    assert "Scoring" not in again.stderr, again.stderr[-3000:]
    assert pd.read_parquet(out / "_dynamics" / "scores.parquet")["ifd"].tolist() == scores["ifd"].tolist()
