"""`sftmix eval` under a 2-process launch shares the held-out set and the benchmarks and reports exactly what one
process reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LAUNCH

from sftmix.testing import make_conversations

SCRIPT = Path(__file__).parent / "scripts" / "eval_tiny.py"
DATA = Path(__file__).parent / "data"


def run_eval(launcher, model_dir, heldout, output_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    env["OMP_NUM_THREADS"] = "1"
    args = ["--model", str(model_dir), "--heldout", str(heldout), "--output_dir", str(output_dir)]
    args += ["--medqa", str(DATA / "medqa_4options.jsonl"), "--medqa5", str(DATA / "medqa_5options.jsonl")]
    args += ["--pubmedqa", str(DATA / "pubmedqa_ori_pqal.json"), "--medmcqa", str(DATA / "medmcqa_dev.json")]
    args += ["--batch_size", "2", "--show_progress", "false"]
    done = subprocess.run([*launcher, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads((Path(output_dir) / "results.json").read_text())
    predictions = {p.stem: p.read_text() for p in sorted((Path(output_dir) / "predictions").glob("*.jsonl"))}
    return results, predictions


@pytest.mark.slow
def test_two_processes_report_what_one_process_reports(tmp_path, tiny_model_dir):
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(row) + "\n" for row in make_conversations(11, seed=2)))
    single, single_predictions = run_eval([sys.executable], tiny_model_dir, heldout, tmp_path / "one")
    double, double_predictions = run_eval(
        [*LAUNCH, "--multi_gpu", "--num_processes", "2"], tiny_model_dir, heldout, tmp_path / "two"
    )
    assert (single["processes"], double["processes"]) == (1, 2)
    assert double["heldout"] == single["heldout"]  # bit for bit: loss, ECE, bins, token counts
    assert double["benchmarks"].keys() == single["benchmarks"].keys()
    for name, summary in single["benchmarks"].items():
        assert {k: v for k, v in double["benchmarks"][name].items()} == summary
    assert double_predictions == single_predictions
