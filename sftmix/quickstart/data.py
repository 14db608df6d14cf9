"""The quickstart data: real chitchat conversations plus the project's medical question-answer pairs.

`sftmix/data/medical_qa.jsonl` (72 pairs) and `sftmix/data/medical_mcq.jsonl` (48 multiple-choice questions
in the MedQA format, for evaluation) were written for this project from general, well-established medical
knowledge. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
MEDICAL_QA = DATA_DIR / "medical_qa.jsonl"
MEDICAL_MCQ = DATA_DIR / "medical_mcq.jsonl"


def medical_mcq_path() -> Path:
    """The held-out medical multiple-choice questions (MedQA jsonl format)."""
    return MEDICAL_MCQ


def medical_qa_rows() -> list[dict]:
    rows = [json.loads(line) for line in MEDICAL_QA.read_text().splitlines() if line.strip()]
    return [
        {"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]}
        for r in rows
    ]


def quickstart_datasets(n_chitchat_train: int = 200, n_chitchat_eval: int = 40, medical_eval: int = 12, seed: int = 0):
    """`DatasetDict(train=..., eval=...)` in `messages` format: chitchat + medical QA, with a held-out slice of each."""
    from datasets import Dataset, DatasetDict

    from sftmix.quickstart.chitchat import chitchat_messages

    chitchat = chitchat_messages(n_chitchat_train + n_chitchat_eval, seed=seed).to_list()
    medical = medical_qa_rows()
    random.Random(seed).shuffle(medical)
    train = chitchat[:n_chitchat_train] + medical[medical_eval:]
    held_out = chitchat[n_chitchat_train:] + medical[:medical_eval]
    random.Random(seed + 1).shuffle(train)
    return DatasetDict(train=Dataset.from_list(train), eval=Dataset.from_list(held_out))
