"""Load a trained model for evaluation from a local directory: a full model (AutoModelForCausalLM) or a PEFT
adapter directory (adapter_config.json; peft's AutoPeftModelForCausalLM loads its base model too)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sftmix._trl_compat import without_zero3_init

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _dtype(name: str):
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_model_for_eval(
    path: str, dtype: str = "auto", device: str | None = None, chat_template_path: str | None = None
):
    """`(model, tokenizer)` in eval mode on `device` (default: the GPU if there is one, else the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftmix.modeling import resolve_model_path

    path = resolve_model_path(str(path))
    directory = Path(path)
    adapter = directory.is_dir() and (directory / "adapter_config.json").is_file()
    tokenizer_path = path
    try:
        if adapter:
            from peft import AutoPeftModelForCausalLM

            with without_zero3_init():
                model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype))
            if not any((directory / f).is_file() for f in TOKENIZER_FILES):
                tokenizer_path = json.loads((directory / "adapter_config.json").read_text())[
                    "base_model_name_or_path"
                ]
                logger.info(
                    "No tokenizer in adapter directory %s; using the base model's (%s)", path, tokenizer_path
                )
        else:
            with without_zero3_init():
                model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as error:
        raise RuntimeError(
            f"Could not load a model from {path}: {error}. Pass a local directory holding a trained model "
            "(config.json and weights, as `sftmix train` saves to its output_dir) or a PEFT adapter directory "
            "(adapter_config.json)."
        ) from error
    if chat_template_path:
        tokenizer.chat_template = Path(chat_template_path).read_text()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not getattr(model, "hf_device_map", None) and not getattr(model, "is_quantized", False):
        model.to(device)
    model.eval()
    return model, tokenizer
