"""Load the model and tokenizer a recipe names: dtype, attention, 4-/8-bit (bitsandbytes), LoRA (PEFT)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

BUILTIN_MODEL_PREFIX = "sftmix/"


def resolve_model_path(name: str) -> str:
    """Map built-in names (e.g. 'sftmix/smollm2-135m-instruct', installed from PyPI) to a local path."""
    if name.startswith(BUILTIN_MODEL_PREFIX):
        from sftmix.quickstart.smollm2 import resolve_model_name

        return str(resolve_model_name(name))
    return name


def model_init_kwargs(model_args, training_args) -> dict:
    """`from_pretrained` keyword arguments from TRL's `ModelConfig`."""
    import torch
    from trl import get_quantization_config

    dtype = model_args.dtype
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype if dtype in ("auto", None) else getattr(torch, dtype),
    }
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if torch.cuda.is_available() and training_args.distributed_state.distributed_type != "DEEPSPEED":
            from trl import get_kbit_device_map

            kwargs["device_map"] = get_kbit_device_map()
    return {k: v for k, v in kwargs.items() if v is not None}


def load_model_and_tokenizer(model_args, training_args):
    """`(model, tokenizer, peft_config)` for a recipe. The bitsandbytes CPU fix is applied where needed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    model = AutoModelForCausalLM.from_pretrained(path, **model_init_kwargs(model_args, training_args))
    disable_bnb_cpu_repacking(model)
    peft_config = get_peft_config(model_args)
    if (model_args.load_in_4bit or model_args.load_in_8bit) and peft_config is None:
        raise ValueError(
            "A 4-bit or 8-bit model can only be trained through adapters: set `use_peft: true` (QLoRA)."
        )
    return model, tokenizer, peft_config


def disable_bnb_cpu_repacking(model) -> int:
    """Work around silent wrong LoRA gradients with bitsandbytes 4-bit on AVX512-BF16 CPUs.

    The first no-grad forward of a `Linear4bit` (any evaluation) repacks its weight into a layout whose
    kernel has no autograd; turning the repacking off keeps gradients right. A no-op on GPUs.
    Returns the number of layers changed.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    if changed:
        logger.info(
            "Disabled bitsandbytes' CPU weight repacking on %d 4-bit layers (wrong-gradient workaround)",
            changed,
        )
    return changed
