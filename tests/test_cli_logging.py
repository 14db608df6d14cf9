"""`sftmix` on the command line shows its own INFO lines and hides dependency warnings that do not apply."""

import json
import os
import subprocess
import sys
from pathlib import Path

from sftmix.testing import make_conversations

ROOT = Path(__file__).parents[1]
BNB_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"

# bitsandbytes logs this when imported on AVX512-BF16 CPUs without the `kernels` package, also on runs without
# quantization. Not every machine has those CPUs: emit the same record from its logger once TRL is imported (after
# the command line has started, as the real import happens).
SITECUSTOMIZE = f"""
import logging, pathlib, sys
def _hook(event, args):
    if event == "import" and args[0] == "trl" and "sftmix_test_emitted" not in sys.modules:
        sys.modules["sftmix_test_emitted"] = sys
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("{BNB_MESSAGE}: no kernels")
        pathlib.Path(__file__).with_name("emitted").write_text("yes")
sys.addaudithook(_hook)
"""


def test_cli_shows_sftmix_info_lines_and_hides_the_bitsandbytes_kernels_warning(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in make_conversations(12, seed=1)))
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
                "max_steps: 1",
                "gradient_checkpointing: false",
                "assistant_only_loss: true",
                'save_strategy: "no"',
                "report_to: none",
                "dataset_num_proc: null",
                "mixup_weight: 0.0",
                f"output_dir: {out}",
            ]
        )
        + "\n"
    )
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]),
    }
    env.pop("SFTMIX_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sftmix", "train", "--config", str(recipe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (hooks / "emitted").is_file()  # the warning was logged during the run
    assert f"INFO sftmix.pipeline: Model saved to {out}" in done.stderr, done.stderr[-4000:]
    assert "INFO sftmix.pipeline: SFTMix training" in done.stderr
    assert BNB_MESSAGE not in done.stderr
