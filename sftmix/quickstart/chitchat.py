"""Real, uncurated two-person conversations from the `chitchat-dataset` PyPI package, as TRL `messages`.

The package's `dataset.json` maps a conversation id to {"messages", "prompt", "start", "ratings"}, where
`messages` is a list of turns and a turn is a list of consecutive chat messages {"text", "sender",
"timestamp"} by one sender. 7,168 conversations; 3,150 of them have a single sender and give nothing to
train on. The rules applied here:

- Roles: the conversation's first sender is the user, the other sender the assistant.
- A message is dropped when it is garbled: no letter at all ("?", ":)", "...."), a link, or a run of 25 or
  more characters without a space (keyboard mashing, digit strings). Whitespace runs are collapsed.
- A turn's remaining messages are joined with newlines; a turn left empty disappears, and two turns of the
  same sender that become adjacent are merged into one.
- The conversation is cut to its first `max_turns` turns and `max_chars` characters of content (whole turns
  only), then to end on an assistant turn; it is kept when an assistant turn remains.
- Sampling: conversation ids are sorted, shuffled with `random.Random(seed)`, and taken in that order.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

PACKAGE = "chitchat_dataset"
INSTALL_HINT = "pip install chitchat-dataset"
MAX_TURNS = 8
MAX_CHARS = 1000  # about 250 SmolLM2 tokens, so most conversations fit the quickstart's max_length

_LINK = re.compile(r"https?://|www\.|\.(com|org|net|io)\b/?", re.IGNORECASE)
_LETTER = re.compile(r"[A-Za-z]")
_NO_SPACE_RUN = re.compile(r"\S{25,}")
_WHITESPACE = re.compile(r"\s+")


def chitchat_file() -> Path:
    """The package's `dataset.json`, found without importing the package (which reads all 40 MB)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The quickstart conversations come from the PyPI package `chitchat-dataset`, which is not installed: "
            f"`{INSTALL_HINT}`."
        )
    path = Path(spec.submodule_search_locations[0]) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `pip install --force-reinstall chitchat-dataset`.")
    return path


@lru_cache(maxsize=1)
def raw_conversations() -> dict[str, dict]:
    """Conversation id -> the package's record (read once per process)."""
    return json.loads(chitchat_file().read_text(encoding="utf-8"))


def clean_text(text) -> str | None:
    """The message with whitespace collapsed, or None when it is empty or garbled."""
    if not isinstance(text, str):
        return None
    text = _WHITESPACE.sub(" ", text).strip()
    if not _LETTER.search(text) or _LINK.search(text) or _NO_SPACE_RUN.search(text):
        return None
    return text


def to_messages(conversation: dict, max_turns: int = MAX_TURNS, max_chars: int = MAX_CHARS) -> list[dict] | None:
    """One chitchat conversation as `messages` (rules in the module docstring), or None if nothing is left."""
    turns: list[tuple[str, str]] = []  # (sender, content), adjacent senders distinct
    for turn in conversation.get("messages") or []:
        texts = [clean_text(m.get("text")) for m in turn]
        texts = [t for t in texts if t]
        if not texts:
            continue
        sender, content = turn[0].get("sender"), "\n".join(texts)
        if turns and turns[-1][0] == sender:
            turns[-1] = (sender, turns[-1][1] + "\n" + content)
        else:
            turns.append((sender, content))
    if not turns:
        return None
    user = turns[0][0]
    messages, used = [], 0
    for sender, content in turns[:max_turns]:
        used += len(content)
        if used > max_chars:
            break
        messages.append({"role": "user" if sender == user else "assistant", "content": content})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages or None


def iter_conversations(seed: int = 0, max_turns: int = MAX_TURNS, max_chars: int = MAX_CHARS) -> Iterator[dict]:
    """Usable conversations as rows {"id", "source", "messages"}, in the seed's order."""
    raw = raw_conversations()
    ids = sorted(raw)
    random.Random(seed).shuffle(ids)
    for conversation_id in ids:
        messages = to_messages(raw[conversation_id], max_turns, max_chars)
        if messages is not None:
            yield {"id": f"chitchat-{conversation_id}", "source": "chitchat", "messages": messages}


def chitchat_messages(n: int | None = None, seed: int = 0, max_turns: int = MAX_TURNS, max_chars: int = MAX_CHARS):
    """The first `n` usable conversations in the seed's order (all if None), as a `datasets.Dataset`."""
    from datasets import Dataset

    rows = take(iter_conversations(seed, max_turns, max_chars), n)
    return Dataset.from_list(rows)


def take(rows: Iterator[dict], n: int | None) -> list[dict]:
    """The first `n` rows (all if None); an error that says how many remain when fewer do."""
    if n is None:
        return list(rows)
    if n < 0:
        raise ValueError(f"The number of conversations must be >= 0, got {n}.")
    taken = list(itertools.islice(rows, n))
    if len(taken) < n:
        raise ValueError(
            f"Asked for {n} chitchat conversations but only {len(taken)} remain usable with these settings; "
            "ask for fewer, or raise `max_turns` / `max_chars`."
        )
    return taken
