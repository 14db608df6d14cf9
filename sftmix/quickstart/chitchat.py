"""Real, uncurated two-person conversations from the `chitchat-dataset` PyPI package, as TRL `messages`.

The package's JSON maps a conversation id to `messages`: a list of turns, each a list of consecutive
messages by one sender. Rule: the conversation's first sender is the user, the other the assistant; a
turn's messages are joined with newlines; empty messages are dropped; a conversation is cut to
`max_turns` turns and `max_chars` characters (whole turns) and kept only if it still has an assistant turn.
"""

from __future__ import annotations

import importlib.util
import json
import random
from functools import lru_cache
from pathlib import Path


def _dataset_file() -> Path:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The quickstart data comes from the PyPI package `chitchat-dataset`: `pip install chitchat-dataset`."
        )
    return Path(spec.submodule_search_locations[0]) / "dataset.json"


@lru_cache(maxsize=1)
def _raw() -> dict:
    return json.loads(_dataset_file().read_text())


def to_messages(conversation: dict, max_turns: int = 6, max_chars: int = 1200) -> list[dict] | None:
    """One chitchat conversation as `messages`, or None when nothing is left to train on."""
    messages, first_sender, used = [], None, 0
    for turn in conversation["messages"]:
        texts = [m["text"].strip() for m in turn if isinstance(m.get("text"), str) and m["text"].strip()]
        if not texts:
            continue
        sender = turn[0]["sender"]
        first_sender = first_sender or sender
        role = "user" if sender == first_sender else "assistant"
        content = "\n".join(texts)
        if messages and messages[-1]["role"] == role:  # a sender spoke twice in a row: one turn
            messages[-1]["content"] += "\n" + content
            used += len(content) + 1
            continue
        if len(messages) >= max_turns or used + len(content) > max_chars:
            break
        messages.append({"role": role, "content": content})
        used += len(content)
    if messages and messages[-1]["role"] == "user":
        messages.pop()  # end on an assistant reply
    return messages if any(m["role"] == "assistant" for m in messages) else None


def chitchat_messages(n: int | None = None, seed: int = 0, max_turns: int = 6, max_chars: int = 1200):
    """Up to `n` conversations (all if None), a deterministic sample for a given seed, as a `datasets.Dataset`."""
    from datasets import Dataset

    raw = _raw()
    ids = sorted(raw)
    random.Random(seed).shuffle(ids)
    rows = []
    for conversation_id in ids:
        messages = to_messages(raw[conversation_id], max_turns, max_chars)
        if messages is not None:
            rows.append({"messages": messages})
        if n is not None and len(rows) >= n:
            break
    return Dataset.from_list(rows)
