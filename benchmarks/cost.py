"""What SFTMix costs over plain SFT: step time and peak memory, SFTMixTrainer vs TRL's SFTTrainer.

Each trainer runs in its own process (so peak memory is its own) on batches of the same shape:
`--batch-size` examples padded/truncated to exactly `--seq-len` tokens, the same data, the same settings.
On a GPU it reports `torch.cuda.max_memory_allocated`; on a CPU the process's peak RSS (which includes the
loaded model: the ratio is then conservative).

    python benchmarks/cost.py                      # SmolLM2-135M-Instruct (from PyPI), bf16, 8 x 256
    python benchmarks/cost.py --model tiny --steps 5   # the tiny test model, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

BUILTIN_SMOLLM2 = "sftmix/smollm2-135m-instruct"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=BUILTIN_SMOLLM2, help="Model path or name; 'tiny' for the test model."
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument(
        "--steps", type=int, default=12, help="Timed optimizer steps (after 2 warm-up steps)."
    )
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--worker", choices=["ntp", "sftmix"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_data(tokenizer, n: int, seed: int = 0):
    """Real conversations when the quickstart data is installed, else synthetic ones; with a group column."""
    try:
        from sftmix.quickstart.data import quickstart_datasets

        train = quickstart_datasets()["train"]
    except Exception:  # the tiny model's vocabulary or no quickstart packages
        from datasets import Dataset

        from sftmix.testing import make_conversations

        train = Dataset.from_list(make_conversations(n, seed=seed))
    train = train.select(range(min(n, len(train))))
    return train.add_column("confident", [i % 2 == 0 for i in range(len(train))])


def worker(args) -> dict:
    import resource

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from sftmix import SFTMixConfig, SFTMixTrainer

    if args.model == "tiny":
        from sftmix.testing import build_tiny_llama, build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer()
        model = build_tiny_llama(len(tokenizer))
    else:
        from sftmix.modeling import resolve_model_path

        path = resolve_model_path(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    steps = args.steps + 2
    data = build_data(tokenizer, n=steps * args.batch_size * 2)
    cuda = torch.cuda.is_available()
    settings = dict(
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        max_length=args.seq_len,
        pad_to_multiple_of=args.seq_len,
        bf16=args.precision == "bf16",
        use_cpu=not cuda,
        gradient_checkpointing=args.gradient_checkpointing,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-5,
        dataset_num_proc=None,
    )
    out = f"/tmp/sftmix-bench-{args.worker}"
    if args.worker == "sftmix":
        trainer = SFTMixTrainer(
            model, SFTMixConfig(out, **settings), train_dataset=data, processing_class=tokenizer
        )
    else:
        trainer = SFTTrainer(
            model, SFTConfig(out, **settings), train_dataset=data, processing_class=tokenizer
        )

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Timer())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = times[2:]
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "step_s": statistics.median(timed),
        "step_s_mean": statistics.fmean(timed),
        "peak_bytes": peak,
        "device": "cuda" if cuda else "cpu",
    }


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    results = {}
    for name in ("ntp", "sftmix"):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--worker", name]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} worker failed:\n{done.stderr[-4000:]}")
        results[name] = json.loads(line[7:])
    ntp, mix = results["ntp"], results["sftmix"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores" if ntp["device"] == "cpu" else _gpu_name()
    print(f"\nSFTMix cost benchmark -- {datetime.date.today()} -- {machine}")
    print(
        f"model {args.model}, batch {args.batch_size} x {args.seq_len} tokens, {args.precision}, {args.steps} timed steps\n"
    )
    print("| trainer | step time (s, median) | peak memory (MiB) |")
    print("|---|---|---|")
    for name, label in (("ntp", "SFTTrainer (NTP)"), ("sftmix", "SFTMixTrainer")):
        print(f"| {label} | {results[name]['step_s']:.3f} | {results[name]['peak_bytes'] / 2**20:.0f} |")
    print(
        f"| **ratio** | **{mix['step_s'] / ntp['step_s']:.3f}x** | **{mix['peak_bytes'] / ntp['peak_bytes']:.3f}x** |"
    )


def _gpu_name():
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    main()
