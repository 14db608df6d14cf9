"""Two processes on a CPU (gloo) give the same training as one process on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LAUNCH

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def run(args, output_dir, *overrides, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [*args, str(SCRIPT), str(output_dir), *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in Path(output_dir).glob("rank*.json")}


def assert_same_training(distributed, single):
    for key in ("loss", "mixup_loss", "ntp_loss", "mixed_tokens", "ntp_loss_confident"):
        got = [log[key] for log in distributed["logs"]]
        expected = [log[key] for log in single["logs"]]
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), key
    for name, values in single["weights"].items():
        assert distributed["weights"][name] == pytest.approx(values, abs=1e-6), name


SCRIPTS = Path(__file__).parent / "scripts"
BACKENDS = {
    "ddp": ["--multi_gpu"],
    "zero2": ["--use_deepspeed", "--deepspeed_config_file", str(SCRIPTS / "zero2.json")],
    "zero3": ["--use_deepspeed", "--deepspeed_config_file", str(SCRIPTS / "zero3.json")],
}


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """One process, micro-batches of 2 accumulated twice: the same global batch as 2 processes x 2."""
    out = tmp_path_factory.mktemp("single")
    return run([sys.executable], out, "per_device_train_batch_size=2", "gradient_accumulation_steps=2")[0]


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, single_process, backend):
    ranks = run([*LAUNCH, *BACKENDS[backend], "--num_processes", "2"], tmp_path, "per_device_train_batch_size=2")
    assert ranks[0]["world_size"] == 2
    assert_same_training(ranks[0], single_process)
    if backend == "ddp":  # gradients were all-reduced: both processes hold the same weights
        assert ranks[1]["weights"] == ranks[0]["weights"]


@pytest.mark.slow
def test_zero3_checkpoint_loads_into_a_plain_model_with_the_trained_weights(tmp_path, single_process):
    from transformers import AutoModelForCausalLM

    ranks = run(
        [*LAUNCH, *BACKENDS["zero3"], "--num_processes", "2"],
        tmp_path,
        "per_device_train_batch_size=2",
        "save=true",
    )
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    state = model.state_dict()
    for name, values in single_process["weights"].items():
        assert state[name].flatten()[:64].tolist() == pytest.approx(values, abs=1e-6), name
    assert ranks[0]["weights"].keys() == single_process["weights"].keys()


@pytest.mark.slow
def test_zero3_with_lora_matches_one_process(tmp_path):
    single = run(
        [sys.executable],
        tmp_path / "one",
        "lora=true",
        "per_device_train_batch_size=2",
        "gradient_accumulation_steps=2",
    )[0]
    ranks = run(
        [*LAUNCH, *BACKENDS["zero3"], "--num_processes", "2"],
        tmp_path / "z3",
        "lora=true",
        "per_device_train_batch_size=2",
    )
    assert_same_training(ranks[0], single)
    assert any("lora_" in name for name in single["weights"])


def test_a_non_finite_loss_on_one_process_stops_every_process(tmp_path):
    """Process 1 alone gets a NaN loss at step 2: both processes name the step and the job exits promptly."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [
        *LAUNCH,
        "--num_processes",
        "2",
        "--multi_gpu",
        str(SCRIPT),
        str(tmp_path),
        "max_steps=4",
        "nan_on_rank=1",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "Non-finite training loss at step 2 (on this process; process 1 of 2" in log
    assert "Non-finite training loss at step 2 (on another process; process 0 of 2" in log
    assert not list(Path(tmp_path).glob("rank*.json"))  # neither process went on to finish the run
