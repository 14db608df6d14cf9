"""Checks that need a CUDA GPU (CI has none): the SFTMix loss in bf16 on CUDA, with and without Liger's kernels,
against the naive fp64 computation of tests/test_trainer_response.py; and a few training steps of each.

    python benchmarks/gpu_checks.py          # prints one line per check, exits non-zero if any fails

The naive computation reads the backbone's hidden states and the head's weight and builds the NTP and Mixup
terms position by position from the token ids (never through the trainer's masks), so it checks that the Mixup
term stays exact whatever kernels the backbone runs. bf16 tolerance: 2e-2 relative, as the CPU bf16 test.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def check_loss(liger: bool) -> str:
    import torch
    from helpers import tiny_model
    from test_trainer_response import multi_turn, naive_loss

    from sftmix import SFTMixConfig, SFTMixTrainer
    from sftmix.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer).to(torch.bfloat16)
    args = SFTMixConfig(
        tempfile.mkdtemp(),
        per_device_train_batch_size=4,
        max_steps=3,
        logging_steps=1,
        bf16=True,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        max_length=128,
        save_strategy="no",
        dataset_num_proc=None,
        disable_tqdm=True,
        mixup_lambda=0.3,
        use_liger_kernel=liger,
    )
    trainer = SFTMixTrainer(model, args, train_dataset=multi_turn(), processing_class=tokenizer)
    model = trainer.model
    if torch.cuda.is_available() and not next(model.parameters()).is_cuda:
        raise AssertionError("the model is not on the GPU")
    model.train()
    worst = 0.0
    for batch in list(trainer.get_train_dataloader())[:3]:
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        trainer._num_mixed_in_batch = None
        loss = trainer.compute_loss(model, dict(batch)).double().item()
        expected, mixed = naive_loss(model, batch, tokenizer, 0.3, 0.2, False, "response")
        assert mixed > 0
        worst = max(worst, abs(loss - expected) / abs(expected))
    if worst > 2e-2:
        raise AssertionError(f"loss differs from the naive computation by {worst:.2e} (relative)")
    result = trainer.train()
    if not torch.isfinite(torch.tensor(result.training_loss)):
        raise AssertionError(f"training loss {result.training_loss}")
    norm, mlp = model.model.norm, model.model.layers[0].mlp
    kernels = f"norm {norm.forward.__qualname__}, mlp {mlp.forward.__qualname__}"  # Liger patches these
    return f"max relative difference {worst:.2e}; 3 steps, loss {result.training_loss:.4f}; {kernels}"


def check_cli(mode: str) -> str:
    """`sftmix run` as a user types it, from another directory, on a recipe with `bf16: true` (tiny model)."""
    import json
    import subprocess
    from pathlib import Path

    from test_cli_end_to_end import write_recipe

    from sftmix.testing import build_tiny_model_dir

    work = Path(tempfile.mkdtemp())
    recipe, out = write_recipe(work, build_tiny_model_dir(work / "model"), bf16="true")
    done = subprocess.run(
        [sys.executable, "-m", "sftmix", "run", "--config", str(recipe), "--dynamics.mode", mode],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise AssertionError(f"sftmix run failed:\n{done.stderr[-3000:]}")
    summary = json.loads((out / "sftmix_summary.json").read_text())
    if not (out / "_dynamics" / "scores.parquet").is_file():
        raise AssertionError("no scores file")
    return f"{summary['steps']} steps, train loss {summary['train_loss']:.4f}, mixup loss {summary.get('mixup_loss')}"


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: the checks run on the CPU (a smoke run of this script, not the check)")
    else:
        print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    failed = 0
    for name, run in (
        ("bf16 on CUDA", lambda: check_loss(False)),
        ("bf16 on CUDA with Liger kernels", lambda: check_loss(True)),
        ("sftmix run, bf16 recipe, reference mode", lambda: check_cli("reference")),
        ("sftmix run, bf16 recipe, training mode", lambda: check_cli("training")),
    ):
        try:
            print(f"PASS {name}: {run()}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}:\n{traceback.format_exc()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
