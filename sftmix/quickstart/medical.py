"""The project's own small medical sets (package data under `sftmix/data/`), written for sftmix.

Both files were written for this project from general, well-established medical knowledge (not copied from
any dataset); they are for demonstrating and testing the pipeline, not for medical advice.

- `medical_qa.jsonl`: instruction / response pairs {"id", "category", "instruction", "response"}, the
  category one of definition, symptoms, diagnosis, treatment, physiology, pharmacology, public_health.
- `medical_mcq.jsonl`: held-out four-option questions in the published MedQA jsonl format {"question",
  "options": {"A".."D"}, "answer_idx", "answer", "meta_info"} plus "id" and "category", so any MedQA reader
  scores them. They ask about other facts than the pairs teach, on overlapping topics.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
MEDICAL_QA_FILE = DATA_DIR / "medical_qa.jsonl"
MEDICAL_MCQ_FILE = DATA_DIR / "medical_mcq.jsonl"
QA_FIELDS = ("id", "category", "instruction", "response")
MCQ_FIELDS = ("id", "question", "options", "answer_idx", "answer")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """Rows of a jsonl file, each checked to carry `fields`; errors name the file and line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error}).") from error
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(f"{path}, line {number}: missing field(s) {missing}.")
        rows.append(row)
    return rows


def medical_qa_rows() -> list[dict]:
    """The question-answer pairs as stored."""
    return read_jsonl(MEDICAL_QA_FILE, QA_FIELDS)


def medical_mcq_rows() -> list[dict]:
    """The multiple-choice questions as stored."""
    return read_jsonl(MEDICAL_MCQ_FILE, MCQ_FIELDS)
