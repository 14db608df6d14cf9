"""Run the dynamics pass on tiny data; the distributed tests compare its scores file across launches.

Usage: [accelerate launch ...] dynamics_tiny.py OUTPUT_DIR [key=value ...]
Keys: checkpoints=["dir", ...] (score them; otherwise a reference run of the tiny model), examples=N,
interrupt_after_scoring=N (every process stops, as a killed job, once N checkpoints are scored), and any
SFTConfig field (JSON values).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dynamics_helpers import conversations, sft_config  # noqa: E402

from sftmix.dynamics import DynamicsConfig, compute_dynamics  # noqa: E402
from sftmix.testing import build_tiny_llama, build_tiny_tokenizer  # noqa: E402


def run(output_dir, **settings):
    """The pass on 21 tiny examples: scores the given `checkpoints`, or runs the tiny model as the reference."""
    overrides = dict(per_device_train_batch_size=2, max_steps=4)
    overrides.update(settings)
    checkpoints = overrides.pop("checkpoints", None)
    examples = overrides.pop("examples", 21)
    interrupt = overrides.pop("interrupt_after_scoring", None)
    if interrupt is not None:
        from sftmix.dynamics import compute

        score_into_cache, scored = compute._Pass.score_into_cache, []

        def stop_after(self, trainer, entry):
            score_into_cache(self, trainer, entry)
            scored.append(entry.label)
            if len(scored) == interrupt:
                raise SystemExit(f"interrupted after scoring {scored}")

        compute._Pass.score_into_cache = stop_after
    tokenizer = build_tiny_tokenizer()
    model = None if checkpoints else build_tiny_llama(len(tokenizer), seed=0)
    args = DynamicsConfig(
        scores_path=os.path.join(output_dir, "scores.parquet"),
        checkpoints=checkpoints,
        num_checkpoints=2,
        scoring_batch_size=3,  # 21 examples: uneven shards, accelerate pads the last round
    )
    sft = sft_config(os.path.join(output_dir, "run"), **overrides)
    path = compute_dynamics(model, conversations(examples), args, processing_class=tokenizer, sft_args=sft)
    if sft.process_index == 0:
        print("world size", sft.world_size, "scores", path, flush=True)
    return path


def main():
    run(sys.argv[1], **{k: json.loads(v) for k, v in (item.split("=", 1) for item in sys.argv[2:])})
    import torch.distributed as dist

    # a clean gloo teardown (an abort at exit otherwise, at times)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
