"""What SFTMix costs over plain SFT: step time and peak memory, SFTMixTrainer vs TRL's SFTTrainer.

Each trainer runs in its own process (so peak memory is its own) on batches of the same shape:
`--batch-size` examples padded/truncated to exactly `--seq-len` tokens, the same data, the same settings.
Memory is the growth of the peak during training over what the process held when training began (model,
data, trainer): on a GPU `torch.cuda.max_memory_allocated`, on a CPU the peak RSS (Linux: `VmHWM`, reset at
the start of training through /proc/self/clear_refs). It is not affected by other load on the machine; step
times are, so `--repeats` alternates the two trainers and reports the median ratio of the rounds.

    python benchmarks/cost.py                      # SmolLM2-135M-Instruct (from PyPI), bf16, 8 x 256
    python benchmarks/cost.py --model tiny --steps 5   # the tiny test model, seconds
    python benchmarks/cost.py --vocab 128256 --batch-size 2 --seq-len 128 --steps 2
        # a 1-layer Llama (hidden 1024) with a Llama-3-size untied bf16 head, built on the fly (no download)
    python benchmarks/cost.py --vocab 128256 --hidden 2048 --layers 16 --batch-size 8 --seq-len 512
        # a Llama-3.2-1B-shaped model (random weights): the speed a GPU user sees
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BUILTIN_SMOLLM2, help="Model path or name; 'tiny' for the test model.")
    parser.add_argument(
        "--vocab",
        type=int,
        help="Build a 1-layer Llama with this vocabulary (untied head, weights in --precision) instead of --model.",
    )
    parser.add_argument("--hidden", type=int, default=1024, help="Hidden size of the --vocab model.")
    parser.add_argument("--layers", type=int, default=1, help="Decoder layers of the --vocab model.")
    parser.add_argument(
        "--repeats", type=int, default=1, help="Rounds of (SFTTrainer, SFTMixTrainer) runs; medians reported."
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="Timed optimizer steps (after 2 warm-up steps).")
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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from sftmix import SFTMixConfig, SFTMixTrainer

    if args.vocab:
        from transformers import LlamaConfig, LlamaForCausalLM

        from sftmix.testing import build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer()
        config = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=int(args.hidden * 3.5),
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 128),
            num_key_value_heads=max(1, args.hidden // 512),
            max_position_embeddings=max(512, args.seq_len),
            tie_word_embeddings=False,
            pad_token_id=0,
        )
        torch.manual_seed(0)
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # built in place in its dtype: no fp32 copy raises the baseline
        try:  # on the GPU where there is one: initialising a 1B model on the CPU takes minutes
            with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    elif args.model == "tiny":
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
        trainer = SFTMixTrainer(model, SFTMixConfig(out, **settings), train_dataset=data, processing_class=tokenizer)
    else:
        trainer = SFTTrainer(model, SFTConfig(out, **settings), train_dataset=data, processing_class=tokenizer)

    times = []
    memory = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                memory["start"] = torch.cuda.memory_allocated()
            else:
                memory["start"] = _reset_peak_rss()

        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    trainer.add_callback(Timer())
    trainer.train()
    timed = times[2:] or times
    peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss()
    return {
        "step_s": statistics.median(timed),
        "step_s_mean": statistics.fmean(timed),
        "peak_bytes": peak,
        "growth_bytes": peak - memory["start"],
        "device": "cuda" if cuda else "cpu",
    }


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> int:
    """Reset the peak RSS where Linux allows it; the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    rss = _status_kib("VmRSS")
    return (rss or 0) * 1024


def _peak_rss() -> int:
    import resource

    hwm = _status_kib("VmHWM")
    return hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_worker(argv, name: str) -> dict:
    cmd = [sys.executable, __file__, *argv, "--worker", name]
    done = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{name} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(line[7:])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    argv = list(argv if argv is not None else sys.argv[1:])
    rounds = [{name: _run_worker(argv, name) for name in ("ntp", "sftmix")} for _ in range(args.repeats)]
    med = statistics.median
    ntp = {key: med(r["ntp"][key] for r in rounds) for key in ("step_s", "peak_bytes", "growth_bytes")}
    mix = {key: med(r["sftmix"][key] for r in rounds) for key in ("step_s", "peak_bytes", "growth_bytes")}
    time_ratio = med(r["sftmix"]["step_s"] / r["ntp"]["step_s"] for r in rounds)
    growth_ratio = med(r["sftmix"]["growth_bytes"] / r["ntp"]["growth_bytes"] for r in rounds)
    cpu = rounds[0]["ntp"]["device"] == "cpu"
    machine = f"{cpu_name()}, {os.cpu_count()} cores" if cpu else _gpu_name()
    model = (
        f"{args.layers}-layer Llama, hidden {args.hidden}, untied {args.vocab}-token head"
        if args.vocab
        else args.model
    )
    memory = "peak RSS" if cpu else "peak CUDA memory"
    print(f"\nSFTMix cost benchmark -- {datetime.date.today()} -- {machine}")
    print(
        f"model {model}, batch {args.batch_size} x {args.seq_len} tokens, {args.precision}, "
        f"{args.steps} timed steps after 2 warm-up steps, {args.repeats} round(s) (medians)\n"
    )
    print(f"| trainer | step time (s, median) | {memory} growth in training (MiB) | {memory} (MiB) |")
    print("|---|---|---|---|")
    for label, res in (("SFTTrainer (NTP)", ntp), ("SFTMixTrainer", mix)):
        print(
            f"| {label} | {res['step_s']:.3f} | {res['growth_bytes'] / 2**20:.0f} | {res['peak_bytes'] / 2**20:.0f} |"
        )
    print(
        f"| **ratio SFTMix/SFT** | **{time_ratio:.3f}x** | **{growth_ratio:.3f}x** | "
        f"**{mix['peak_bytes'] / ntp['peak_bytes']:.3f}x** |"
    )
    if args.repeats > 1:  # the spread: CPU peak RSS depends on how the allocator's arenas happened to fill
        per_round = ", ".join(
            f"{r['sftmix']['step_s'] / r['ntp']['step_s']:.3f}x / {r['sftmix']['growth_bytes'] / r['ntp']['growth_bytes']:.3f}x"
            for r in rounds
        )
        print(f"\nper round (step time / memory growth): {per_round}")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name():
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    main()
