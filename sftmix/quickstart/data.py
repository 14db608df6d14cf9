"""The quickstart data (`dataset_name: sftmix/quickstart`): real chitchat conversations plus the project's
medical question-answer pairs, in TRL's `messages` format, with a held-out split.

`sftmix/quickstart-noisy` is the same data with `NOISE` of the training rows corrupted by `swap_responses`
(the held-out split stays clean), marked in a boolean `corrupted` column: the study's uncurated regime.

`train` = `n_chitchat_train` conversations + the medical pairs not held out; `eval` = `n_chitchat_eval`
other conversations + `n_medical_eval` pairs. Both splits are shuffled together and carry `id` and `source`
("chitchat" or "medical_qa") columns next to `messages` (SFTTrainer ignores them). Same arguments, same
rows; the held-out rows do not change with `n_chitchat_train`.
"""

from __future__ import annotations

import random


def quickstart_datasets(
    n_chitchat_train: int = 200,
    n_chitchat_eval: int = 40,
    n_medical_eval: int = 20,
    seed: int = 0,
    noise: float = 0.0,
):
    """`DatasetDict(train=..., eval=...)` mixing chitchat conversations and medical question-answer pairs; with
    `noise` > 0, that fraction of the training rows corrupted (`swap_responses`, seeded by `seed`)."""
    from datasets import Dataset, DatasetDict

    from sftmix.quickstart.chitchat import iter_conversations, take
    from sftmix.quickstart.medical import medical_qa_rows

    conversations = iter_conversations(seed)
    chitchat_eval = take(conversations, n_chitchat_eval)  # first: it does not depend on `n_chitchat_train`
    chitchat_train = take(conversations, n_chitchat_train)
    medical = [  # the instruction as the user turn, the response as the assistant turn
        {
            "id": row["id"],
            "source": "medical_qa",
            "messages": [
                {"role": "user", "content": row["instruction"]},
                {"role": "assistant", "content": row["response"]},
            ],
        }
        for row in medical_qa_rows()
    ]
    if not 0 <= n_medical_eval < len(medical):
        raise ValueError(
            f"`n_medical_eval` must lie in [0, {len(medical)}) (there are {len(medical)} medical pairs), "
            f"got {n_medical_eval}."
        )
    random.Random(seed).shuffle(medical)
    train = chitchat_train + medical[n_medical_eval:]
    held_out = chitchat_eval + medical[:n_medical_eval]
    random.Random(seed + 1).shuffle(train)
    random.Random(seed + 2).shuffle(held_out)
    if noise > 0:
        train = swap_responses(train, noise, seed + 3)
    return DatasetDict(train=Dataset.from_list(train), eval=Dataset.from_list(held_out))


NOISE = 0.3


def swap_responses(rows: list[dict], fraction: float, seed: int = 0) -> list[dict]:
    """The study's corruption rule: round(`fraction` x N) rows, drawn at random (seeded), each get the last assistant
    turn of the next drawn row in place of their own (a cyclic shift over the drawn rows), so every corrupted
    response is fluent but answers another conversation. Every row gets `corrupted` (True for those)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"The corrupted fraction must lie in [0, 1], got {fraction}.")
    drawn = random.Random(seed).sample(range(len(rows)), round(fraction * len(rows)))
    corrupted = [{**row, "corrupted": False} for row in rows]
    for target, donor in zip(drawn, drawn[1:] + drawn[:1], strict=True):
        messages = [dict(m) for m in rows[target]["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        messages[last]["content"] = [m for m in rows[donor]["messages"] if m["role"] == "assistant"][-1]["content"]
        corrupted[target] = {**rows[target], "messages": messages, "corrupted": len(drawn) > 1}
    return corrupted
