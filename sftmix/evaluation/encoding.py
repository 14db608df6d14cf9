"""Tokenise a held-out example the way SFTTrainer does for training, and mark its trainable tokens.

The convention (TRL with `assistant_only_loss=True` and its default `completion_only_loss`):
- `messages`: the chat template renders the conversation; when the template has `{% generation %}` markers the
  trainable tokens are the assistant tokens (`return_assistant_tokens_mask=True`), otherwise all tokens;
- `prompt` / `completion` (text): EOS is appended to the completion if missing; the trainable tokens are those
  after the longest common prefix of the tokenised prompt and the tokenised prompt + completion;
- `prompt` / `completion` (message lists): the same, with the chat template (the prompt with the generation
  prompt, the whole conversation without), and only assistant tokens if the template has generation markers;
- `text`: EOS is appended if missing; every token is trainable.
Sequences longer than `max_length` keep their start. Labels use -100 for tokens without loss.
"""

from __future__ import annotations

import re

from sftmix.evaluation.token_scores import IGNORE_INDEX

_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(tokenizer) -> bool:
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default", "")
    return bool(template) and bool(_GENERATION_MARKER.search(template))


def require_chat_template(tokenizer, what: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{what} needs a chat template, but the tokenizer has none. Set `chat_template_path` (--chat_template_path), "
            "e.g. to sftmix/templates/chatml_training.jinja, the template the recipes train base models with."
        )


def common_prefix_length(ids: list[int], other: list[int]) -> int:
    length = 0
    for a, b in zip(ids, other, strict=False):
        if a != b:
            break
        length += 1
    return length


def _chat_ids(tokenizer, messages, **kwargs) -> dict:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)


def encode_sft_example(example: dict, tokenizer, max_length: int | None = None) -> dict:
    """`{"input_ids": [...], "labels": [...]}` of one example in `messages`, prompt/completion or `text` format."""
    if "messages" in example:
        require_chat_template(tokenizer, "A `messages` example")
        if has_generation_markers(tokenizer):
            encoded = _chat_ids(tokenizer, example["messages"], return_assistant_tokens_mask=True)
            input_ids = list(encoded["input_ids"])
            labels = [
                t if m else IGNORE_INDEX for t, m in zip(input_ids, encoded["assistant_masks"], strict=True)
            ]
        else:
            input_ids = list(_chat_ids(tokenizer, example["messages"])["input_ids"])
            labels = list(input_ids)
    elif "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        if isinstance(prompt, list):
            require_chat_template(tokenizer, "A conversational prompt/completion example")
            prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)["input_ids"]
            markers = has_generation_markers(tokenizer)
            encoded = _chat_ids(tokenizer, prompt + completion, return_assistant_tokens_mask=markers)
            input_ids = list(encoded["input_ids"])
            assistant = encoded["assistant_masks"] if markers else [1] * len(input_ids)
        else:
            if tokenizer.eos_token and not completion.endswith(tokenizer.eos_token):
                completion = completion + tokenizer.eos_token
            prompt_ids = tokenizer(text=prompt)["input_ids"]
            input_ids = list(tokenizer(text=prompt + completion)["input_ids"])
            assistant = [1] * len(input_ids)
        start = common_prefix_length(prompt_ids, input_ids)
        labels = [
            t if i >= start and keep else IGNORE_INDEX
            for i, (t, keep) in enumerate(zip(input_ids, assistant, strict=True))
        ]
    elif "text" in example:
        text = example["text"]
        if tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
            text = text + tokenizer.eos_token
        input_ids = list(tokenizer(text=text)["input_ids"])
        labels = list(input_ids)
    else:
        raise ValueError(
            f"A held-out example has the keys {sorted(example)}; expected `messages`, `prompt` + `completion`, "
            "or `text`."
        )
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def num_trainable(labels: list[int]) -> int:
    """Tokens that are predicted with a loss (the first token is never predicted)."""
    return sum(label != IGNORE_INDEX for label in labels[1:])
