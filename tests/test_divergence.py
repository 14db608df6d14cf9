"""A diverged reference run never writes a scores file; the command says which checkpoint and how many examples,
and exits with a non-zero status."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sftmix.dynamics.scoring import CheckpointScores
from sftmix.dynamics.split import check_finite, scores_frame
from sftmix.testing import make_conversations

ROOT = Path(__file__).parents[1]


def test_non_finite_perplexities_name_the_checkpoint_and_the_count():
    perplexity = np.array([2.0, np.nan, np.inf, 3.0, np.nan])
    num_tokens = np.array([4, 5, 6, 7, 0])  # the last row has no trainable token: not scored, not counted
    with pytest.raises(FloatingPointError, match="checkpoint-6 .*for 2 of 4 scored examples.*diverged"):
        check_finite(perplexity, num_tokens, "checkpoint-6")
    check_finite(np.array([2.0, np.nan]), np.array([3, 0]), "checkpoint-6")  # fine


def test_the_scores_table_is_never_built_from_non_finite_scores():
    rows = np.arange(4)
    good = CheckpointScores(rows, np.full(4, 5), np.array([2.0, 3.0, 4.0, 5.0]), np.full(4, 0.5))
    bad = CheckpointScores(rows, np.full(4, 5), np.array([2.0, np.nan, 4.0, 5.0]), np.full(4, 0.5))
    with pytest.raises(FloatingPointError, match="checkpoint-2 .*1 of 4"):
        scores_frame(["a", "b", "c", "d"], [good, bad], ["checkpoint-1", "checkpoint-2"], 0.5)


@pytest.mark.slow
def test_sftmix_dynamics_with_a_diverging_reference_run_fails_without_a_scores_file(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in make_conversations(24, seed=1)))
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "\n".join(
            [
                f"model_name_or_path: {tiny_model_dir}",
                f"dataset_files: [{data}]",
                "bf16: false",
                "max_length: 64",
                "per_device_train_batch_size: 4",
                "max_steps: 4",
                "learning_rate: 1.0e+30",
                "gradient_checkpointing: false",
                "assistant_only_loss: true",
                'save_strategy: "no"',
                "report_to: none",
                "dataset_num_proc: null",
                "disable_tqdm: true",
                f"output_dir: {out}",
                "mixup_weight: 0.2",
                "dynamics:",
                "  num_checkpoints: 2",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "sftmix", "dynamics", "--config", str(recipe)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-4000:]
    assert "non-finite perplexity" in done.stderr and "checkpoint-2" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not (out / "_dynamics" / "scores.parquet").exists()
    assert not list((out / "_dynamics" / "scores_checkpoints").glob("*.parquet"))  # nothing bad cached either
