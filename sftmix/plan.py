"""What a recipe will do, before it does it: the stages, their examples and optimizer steps, the checkpoints the
dynamics pass scores, and the disk its checkpoints take. `sftmix check` prints it with the resolved settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sftmix.dynamics.config import DynamicsConfig, optimizer_steps, reference_steps, world_size

# Bytes per parameter of a checkpoint that can resume: bf16/fp32 weights plus fp32 master copy and two AdamW
# moments (DeepSpeed and torch AdamW alike, to within the weight dtype): the usual ~16 B/param estimate.
RESUMABLE_BYTES_PER_PARAM = 16
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "auto": 2, None: 2}


def parameter_count(model_name: str) -> int | None:
    """Parameters of a local model (its config built on the meta device); None when it cannot be read."""
    config_file = Path(model_name) / "config.json"
    if not config_file.is_file():
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_name)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # a config transformers cannot build: no estimate, not a problem
        return None


def _gigabytes(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:,.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:,.1f} MB"


def build_plan(recipe, num_train: int, num_held_out: int | None) -> list[str]:
    """Lines of the plan: stages in order, each with its examples, steps and what it writes."""
    args = recipe.training
    lines = [f"train examples: {num_train}" + (f", held-out examples: {num_held_out}" if num_held_out else "")]
    steps = optimizer_steps(num_train, args)
    params = parameter_count(recipe.model.model_name_or_path or "")
    lora = recipe.model.use_peft
    checkpoint_bytes = None
    if params is not None:
        checkpoint_bytes = params * (0.03 if lora else 1) * RESUMABLE_BYTES_PER_PARAM
        dtype = DTYPE_BYTES.get(recipe.model.dtype, 2)
        lines.append(
            f"model: {params:,} parameters; final model ~{_gigabytes(params * dtype)}; a resumable checkpoint "
            f"~{_gigabytes(checkpoint_bytes)}"
            + (" (LoRA: adapter and its optimizer state, ~3% assumed)" if lora else "")
        )
    stage = 1
    if args.mixup_enabled and not args.dynamics_path:
        dynamics = recipe.dynamics or DynamicsConfig()
        given = dynamics.checkpoints or []
        num_checkpoints = len(given) or dynamics.num_checkpoints
        measure = (
            "; confidence by IFD (a second forward over the responses alone)" if dynamics.confidence == "ifd" else ""
        )
        if args.training_dynamics:
            lines.append(
                f"{stage}. dynamics (training): recorded from the SFTMix run's own forward for {num_train} examples "
                "(no reference run, no scoring pass)"
            )
        elif given:
            lines.append(f"{stage}. dynamics: score {num_train} examples at {len(given)} given checkpoint(s){measure}")
        elif dynamics.split == "random":
            lines.append(f"{stage}. dynamics: a random split of {num_train} examples (seeded; no reference run)")
        else:
            ref_steps = reference_steps(args, dynamics, num_train)
            disk = (
                f", {num_checkpoints} checkpoints ~{_gigabytes(num_checkpoints * checkpoint_bytes)}"
                if checkpoint_bytes
                else ""
            )
            lines.append(
                f"{stage}. dynamics: reference NTP run of {ref_steps} optimizer steps, scoring {num_train} examples "
                f"at {num_checkpoints} checkpoints{disk}{measure}"
            )
        stage += 1
    kind = f"SFTMix (NTP + {args.mixup_weight:.2g} x Mixup)" if args.mixup_enabled else "NTP (plain SFT)"
    saves = ""
    if args.save_strategy not in ("no", None) and checkpoint_bytes:
        kept = args.save_total_limit or "all"
        saves = f", keeps {kept} checkpoint(s) of ~{_gigabytes(checkpoint_bytes)} each"
    lines.append(f"{stage}. train: {kind}, {steps} optimizer steps{saves} -> {args.output_dir}")
    if recipe.evaluation is not None:
        evaluation = recipe.evaluation
        names = ["held-out loss and calibration"] if evaluation.heldout_split or evaluation.heldout else []
        lines.append(
            f"{stage + 1}. evaluation: {', '.join(names + list(evaluation.benchmark_sources())) or 'none named'}"
        )
    if world_size() == 1:
        lines.append("(steps for 1 process; under `accelerate launch` they divide by the number of processes)")
    return lines


def render_settings(recipe) -> str:
    """Every resolved setting of each part of the recipe that is there, keys sorted, values as JSON."""
    lines = []
    for section in ("data", "model", "training", "dynamics", "evaluation"):
        if (settings := getattr(recipe, section)) is not None:
            names = sorted(f.name for f in dataclasses.fields(settings) if f.init)
            lines += [f"{section}:"] + [
                f"  {name}: {json.dumps(getattr(settings, name), default=str)}" for name in names
            ]
    return "\n".join(lines)
