"""The study's smallest setting end to end on the tiny model: every stage of `benchmarks/study.py` runs, the
tables and the figure come out, and a rerun skips the finished runs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def smoke_study(model_dir, out) -> list[str]:
    """The command of the study's smallest setting on the tiny model, writing to `out`."""
    study = str(ROOT / "benchmarks" / "study.py")
    return [sys.executable, study, "--setting", "smoke", "--model", str(model_dir), "--output-dir", str(out)]


def test_the_smallest_study_runs_end_to_end_and_resumes(tmp_path, tiny_model_dir):
    out = tmp_path / "study"
    cmd = smoke_study(tiny_model_dir, out)
    cmd += ["--seeds", "0", "1", "--arms", "sftmix", "random_split"]
    cmd += ["--regimes", "small_data"]  # one regime: the others run the same code on another recipe
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "study.json").read_text())
    assert set(results) == {"small_data", "detection", "ifd_seconds"}
    assert set(results["small_data"]) == {"ntp", "sftmix", "random_split"}
    for runs in results["small_data"].values():
        assert len(runs) == 2 and all(r["heldout_loss"] > 0 for r in runs)
    assert len(results["small_data"]["ntp"][0]["curve"]) == 4  # held-out loss after each of the 4 epochs
    table = (out / "study.md").read_text()
    assert "Paired difference to NTP" in table and "| random_split |" in table
    assert (out / "study.png").stat().st_size > 10_000
    # the random split really is another split than the confidence one
    sftmix_dir = out / "small_data" / "random_split" / "seed0"
    assert (sftmix_dir / "random_split.parquet").is_file()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[study] ntp seed 0" not in again.stdout  # finished runs are kept and skipped
