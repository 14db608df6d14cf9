"""How fast the dynamics pass scores compared with training: tokens/second and peak memory, same model and data.

Scoring is one forward without gradients through TRL's fused LM head (no batch x seq x vocab logits), batches
grouped by length; training is TRL's SFTTrainer (forward, backward, optimizer step). Each runs in its own process so
that its peak memory is its own: `torch.cuda.max_memory_allocated` on a GPU, the process's peak RSS on a CPU
(which includes the libraries and the loaded model). Tokens are input tokens (attention mask), counted the same way
for both. The target is scoring >= 2.5x the training rate.

    python benchmarks/dynamics_throughput.py                     # the tiny test model, seconds
    python benchmarks/dynamics_throughput.py --model PATH        # any causal LM directory (its own tokenizer)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="Model directory or Hub id; 'tiny' for the test model.")
    parser.add_argument("--examples", type=int, default=256, help="Conversations in the benchmark data.")
    parser.add_argument("--batch-size", type=int, default=8, help="Per-device training batch size.")
    parser.add_argument("--scoring-batch-size", type=int, default=8, help="Per-device scoring batch size.")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="Training only (as recipes do).")
    parser.add_argument("--worker", choices=["train", "score"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_data(n: int, seed: int = 0):
    """Conversations of varied length: short prompts, responses of 10 to 150 words."""
    from datasets import Dataset

    from sftmix.testing import random_sentence

    rng = random.Random(seed)
    rows = [
        {
            "messages": [
                {"role": "user", "content": random_sentence(rng, 5, 30)},
                {"role": "assistant", "content": random_sentence(rng, 10, 150)},
            ]
        }
        for _ in range(n)
    ]
    return Dataset.from_list(rows)


def load(model_name: str):
    if model_name == "tiny":
        from sftmix.testing import build_tiny_llama, build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer()
        return build_tiny_llama(len(tokenizer)), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftmix.modeling import resolve_model_path

    path = resolve_model_path(model_name)
    return AutoModelForCausalLM.from_pretrained(path, dtype="auto"), AutoTokenizer.from_pretrained(path)


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def worker(args) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig

    from sftmix.dynamics.examples import with_row_index
    from sftmix.dynamics.reference import DynamicsTrainer
    from sftmix.dynamics.scoring import sequence_lengths

    model, tokenizer = load(args.model)
    if "{% generation %}" not in (tokenizer.chat_template or ""):  # assistant-only loss needs the markers
        from sftmix.testing import CHATML_TRAINING_TEMPLATE

        tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
    data = with_row_index(build_data(args.examples))
    steps = args.examples // args.batch_size
    config = SFTConfig(
        f"/tmp/sftmix-bench-dynamics-{args.worker}",
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        max_length=args.max_length,
        assistant_only_loss=True,
        bf16=args.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=args.gradient_checkpointing and args.worker == "train",
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        learning_rate=1e-5,
        dataset_num_proc=None,
    )
    trainer = DynamicsTrainer(model, config, train_dataset=data, processing_class=tokenizer)
    lengths = sequence_lengths(trainer.train_dataset)

    if args.worker == "score":
        trainer.score(args.scoring_batch_size, desc="warm-up")  # first-call costs (kernels, allocator)
        sync()
        start = time.perf_counter()
        trainer.score(args.scoring_batch_size, desc="scoring")
        sync()
        seconds = time.perf_counter() - start
        return {"tokens": int(lengths.sum()), "seconds": seconds, "peak_mb": peak_memory_mb()}

    marks = []  # (time, tokens so far) at every step end; the first two steps are warm-up

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            sync()
            marks.append((time.perf_counter(), trainer._total_train_tokens))

    trainer.add_callback(Clock())
    trainer.train()
    (t0, n0), (t1, n1) = marks[1], marks[-1]
    return {"tokens": n1 - n0, "seconds": t1 - t0, "peak_mb": peak_memory_mb()}


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def run_worker(kind: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", kind]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = {kind: run_worker(kind, argv) for kind in ("train", "score")}
    rates = {kind: r["tokens"] / r["seconds"] for kind, r in results.items()}
    ratio = rates["score"] / rates["train"]
    print(f"\nDynamics pass throughput -- {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    print(f"machine: {machine()}")
    print(
        f"model: {args.model}, {args.examples} conversations, max_length {args.max_length}, {args.precision}, "
        f"train batch {args.batch_size}{' + gradient checkpointing' if args.gradient_checkpointing else ''}, "
        f"scoring batch {args.scoring_batch_size}"
    )
    print(f"\n| {'pass':<28} | {'tokens/s':>10} | {'tokens':>8} | {'seconds':>8} | {'peak memory MB':>14} |")
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 16}|")
    names = {"train": "training (SFTTrainer step)", "score": "scoring (forward, no grad)"}
    for kind, r in results.items():
        print(
            f"| {names[kind]:<28} | {rates[kind]:>10,.0f} | {r['tokens']:>8,} | {r['seconds']:>8.2f} | "
            f"{r['peak_mb']:>14,.0f} |"
        )
    verdict = "meets" if ratio >= 2.5 else "BELOW"
    print(f"\nscoring / training = {ratio:.2f}x ({verdict} the 2.5x target)")


if __name__ == "__main__":
    main()
