"""Train the tiny model with SFTMix for a few steps and write what the distributed tests compare.

Usage: [accelerate launch ...] train_tiny.py OUTPUT_DIR [SFTMixConfig overrides as key=value ...]
Each process writes OUTPUT_DIR/rank{N}.json: the logged metrics and the trained weights' values.
Script options: lora=true (LoRA adapters on q/v), save=true (save the model to OUTPUT_DIR/final),
nan_on_rank=N (process N draws NaN lambdas at step 2, so only its loss is non-finite).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers import conversations, cpu_args, tiny_model  # noqa: E402

from sftmix import SFTMixTrainer  # noqa: E402
from sftmix.testing import build_tiny_tokenizer  # noqa: E402


def main():
    output_dir = sys.argv[1]
    overrides = dict(max_steps=2, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", mixup_lambda=0.3)
    for item in sys.argv[2:]:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    lora = overrides.pop("lora", False)  # script options, not SFTMixConfig fields
    save = overrides.pop("save", False)
    nan_on_rank = overrides.pop("nan_on_rank", None)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer)
    trainer = SFTMixTrainer(
        model,
        cpu_args(output_dir, **overrides),
        train_dataset=conversations(),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    if nan_on_rank is not None and trainer.accelerator.process_index == nan_on_rank:
        draw = trainer._draw_lambdas
        trainer._draw_lambdas = lambda n: draw(n) * (float("nan") if trainer.state.global_step == 1 else 1.0)
    trainer.train()
    if save:
        trainer.save_model(os.path.join(output_dir, "final"))
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    weights = {} if state is None else {k: v.float().flatten()[:64].tolist() for k, v in state.items()}
    logs = [h for h in trainer.state.log_history if "mixup_loss" in h]
    with open(os.path.join(output_dir, f"rank{trainer.accelerator.process_index}.json"), "w") as f:
        json.dump({"logs": logs, "weights": weights, "world_size": trainer.accelerator.num_processes}, f)
    import torch.distributed as dist

    # a clean gloo teardown (an abort at exit otherwise, at times: "terminate called without an active exception")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
