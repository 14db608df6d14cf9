"""What the whole `sftmix run` costs, per way of getting the split, against the NTP twin: wall time of the command a
user types (model load, dynamics, training, saving, evaluation), every arm timed in the same invocation.

Arms (all on the quickstart recipes, SmolLM2-135M-Instruct and the quickstart data, from PyPI):

- `ntp`: `sftmix run --config quickstart/ntp` (plain SFT: the baseline);
- `training`: `sftmix run --config quickstart/sftmix --dynamics.mode training` (confidence recorded from the
  training forward: no reference run, no scoring pass);
- `reference`: `sftmix run --config quickstart/sftmix` (the paper's mode: one-epoch reference run, then SFTMix).

Each run starts in a fresh output directory, so nothing is cached. Step times depend on other load on the machine:
`--repeats` alternates the arms and the ratios are medians over rounds (run it alone).

    python benchmarks/pipeline_time.py                      # ntp and training, 1 round
    python benchmarks/pipeline_time.py --arms ntp training reference --repeats 2
    python benchmarks/pipeline_time.py --arms ntp training -- --num_train_epochs 3   # the 3-epoch variant
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cost import cpu_name  # (benchmarks/ is on the path of a script run from it)

ARMS = {
    "ntp": ["--config", "quickstart/ntp"],
    "training": ["--config", "quickstart/sftmix", "--dynamics.mode", "training"],
    "reference": ["--config", "quickstart/sftmix"],
}


def run_arm(name: str, work: Path, extra: list[str]) -> float:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "sftmix", "run", *ARMS[name], "--output_dir", str(out), *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - started
    (work / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        sys.exit(f"{name} failed (log {work / f'{name}.log'}):\n{done.stderr[-3000:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["ntp", "training"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work-dir", help="Where the runs write (default: a temporary directory).")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="More `sftmix run` options for every arm.")
    args = parser.parse_args(argv)
    args.extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    if "ntp" not in args.arms:
        parser.error("--arms must include ntp (the baseline of the ratios)")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sftmix-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    rounds = []
    for r in range(args.repeats):
        times = {}
        for name in args.arms:
            times[name] = run_arm(name, work, args.extra)
            print(f"round {r + 1}: {name} {times[name]:.0f} s", flush=True)
        rounds.append(times)
    med = statistics.median
    print(
        f"\nsftmix run, whole pipeline -- {datetime.date.today()} -- {cpu_name()}, "
        f"{os.cpu_count()} cores -- {args.repeats} round(s), medians\n"
    )
    print("| arm | wall time (s) | ratio to the NTP twin |")
    print("|---|---|---|")
    for name in args.arms:
        ratio = med(t[name] / t["ntp"] for t in rounds)
        print(f"| {name} | {med(t[name] for t in rounds):.0f} | {ratio:.2f}x |")
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
