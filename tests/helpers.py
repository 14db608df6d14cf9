"""Shared builders for tests: tiny data with a confidence column, configs that run on a CPU, the launcher."""

import socket
import sys

from datasets import Dataset

from sftmix.testing import build_tiny_llama, make_conversations


def conversations(n=24, seed=0, every=2):
    rows = make_conversations(n, seed=seed)
    for i, row in enumerate(rows):
        row["confident"] = i % every == 0
    return Dataset.from_list(rows)


def cpu_settings(**overrides):
    settings = dict(
        per_device_train_batch_size=4,
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        assistant_only_loss=True,
        max_length=64,
        save_strategy="no",
        dataset_num_proc=None,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return settings


def cpu_args(output_dir, **overrides):
    from sftmix import SFTMixConfig

    return SFTMixConfig(str(output_dir), **cpu_settings(**overrides))


def tiny_model(tokenizer, seed=0):
    return build_tiny_llama(len(tokenizer), seed=seed)


def free_port():
    """A port no other test process holds: `make test` runs tests in parallel (pytest-xdist), and two launches
    on accelerate's default port 29500 would meet in one rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `accelerate launch` for 2-process tests on a CPU; add the backend flags and `--num_processes`
LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    str(free_port()),
]
