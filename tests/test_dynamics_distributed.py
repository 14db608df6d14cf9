"""Two processes on a CPU (gloo) score the same numbers as one process, gathered back in dataset order."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from dynamics_helpers import save_checkpoints
from helpers import LAUNCH

from sftmix.scores import read_scores

SCRIPTS = Path(__file__).parent / "scripts"
BACKENDS = {
    "ddp": ["--multi_gpu"],
    "zero3": ["--use_deepspeed", "--deepspeed_config_file", str(SCRIPTS / "zero3.json")],
}


def run_in_process(output_dir, **settings):
    """One process: run the script's pass here (no launch, no second import of the stack)."""
    spec = importlib.util.spec_from_file_location("dynamics_tiny", SCRIPTS / "dynamics_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return read_scores(module.run(str(output_dir), **settings))


def launch(launcher, output_dir, *overrides, timeout=300, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, str(SCRIPTS / "dynamics_tiny.py"), str(output_dir), *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if not check:
        return done
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return read_scores(Path(output_dir) / "scores.parquet"), done.stdout


def assert_same_scores(distributed, single):
    (frame, metadata), (expected, expected_metadata) = distributed, single
    assert frame["example_id"].tolist() == expected["example_id"].tolist()
    assert frame["row_index"].tolist() == expected["row_index"].tolist()
    np.testing.assert_allclose(
        np.array(frame["perplexities"].tolist()), np.array(expected["perplexities"].tolist()), rtol=1e-5
    )
    assert frame["confident"].tolist() == expected["confident"].tolist()
    assert metadata["dataset_fingerprint"] == expected_metadata["dataset_fingerprint"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from sftmix.testing import build_tiny_tokenizer

    return save_checkpoints(tmp_path_factory.mktemp("ckpt"), build_tiny_tokenizer(), seeds=(0, 1))


@pytest.fixture(scope="module")
def one_process_given(tmp_path_factory, checkpoints):
    return run_in_process(tmp_path_factory.mktemp("one-given"), checkpoints=checkpoints)


@pytest.fixture(scope="module")
def one_process_reference(tmp_path_factory):
    """1 process x 2 examples x 2 accumulation steps: the global batch of 2 processes x 2 examples."""
    return run_in_process(tmp_path_factory.mktemp("one-reference"), gradient_accumulation_steps=2)


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_two_processes_score_given_checkpoints_like_one_process(tmp_path, checkpoints, one_process_given, backend):
    distributed, stdout = launch(
        [*LAUNCH, *BACKENDS[backend], "--num_processes", "2"],
        tmp_path,
        f"checkpoints={json.dumps(checkpoints)}",
    )
    assert "world size 2" in stdout
    assert len(distributed[0]) == 21
    assert_same_scores(distributed, one_process_given)


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_two_processes_run_and_score_the_reference_like_one_process(tmp_path, one_process_reference, backend):
    distributed, stdout = launch([*LAUNCH, *BACKENDS[backend], "--num_processes", "2"], tmp_path)
    assert "world size 2" in stdout
    assert [c["label"] for c in distributed[1]["checkpoints"]] == ["checkpoint-2", "checkpoint-4"]
    assert_same_scores(distributed, one_process_reference)


@pytest.mark.slow
def test_two_processes_resume_an_interrupted_reference_run_like_one_process(tmp_path, one_process_reference):
    """Killed after the first checkpoint is scored (before the second exists), then relaunched: the processes
    agree on where to resume (the main process decides alone, with no collective call inside its decision)."""
    launcher = [*LAUNCH, *BACKENDS["ddp"], "--num_processes", "2"]
    killed = launch(launcher, tmp_path, "interrupt_after_scoring=1", check=False)
    assert killed.returncode != 0 and "interrupted after scoring ['checkpoint-2']" in killed.stderr
    assert (tmp_path / "reference" / "checkpoint-2").is_dir() and not (
        tmp_path / "reference" / "checkpoint-4"
    ).exists()
    resumed, _ = launch(launcher, tmp_path, timeout=240)
    assert_same_scores(resumed, one_process_reference)
