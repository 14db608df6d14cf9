"""The project's medical sets: well-formed, readable as MedQA, and held out from the training pairs."""

import re
from collections import Counter

from sftmix.quickstart.data import quickstart_datasets
from sftmix.quickstart.medical import MEDICAL_MCQ_FILE, medical_mcq_rows, medical_qa_rows

CATEGORIES = {
    "definition",
    "symptoms",
    "diagnosis",
    "treatment",
    "physiology",
    "pharmacology",
    "public_health",
}


def sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(])", text) if s]


def test_question_answer_pairs_are_well_formed_and_varied():
    rows = medical_qa_rows()
    assert len(rows) >= 100
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["instruction"].lower() for r in rows}) == len(rows)
    for row in rows:
        assert row["instruction"].strip() == row["instruction"] and row["instruction"].endswith("?"), row["id"]
        assert 1 <= len(sentences(row["response"])) <= 4, row["id"]
        assert row["category"] in CATEGORIES, row["id"]
    assert len(Counter(r["category"] for r in rows)) >= 6


def test_multiple_choice_questions_follow_the_medqa_format():
    rows = medical_mcq_rows()
    assert len(rows) >= 50
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert list(row["options"]) == ["A", "B", "C", "D"], row["id"]
        assert len(set(row["options"].values())) == 4, row["id"]
        assert row["answer_idx"] in row["options"] and row["options"][row["answer_idx"]] == row["answer"], row["id"]
    assert min(Counter(r["answer_idx"] for r in rows).values()) >= len(rows) // 8  # no favourite letter


def test_the_evaluation_reads_the_questions_as_medqa():
    from sftmix.evaluation.benchmarks import read_medqa

    questions = read_medqa(MEDICAL_MCQ_FILE, num_options=4)
    rows = medical_mcq_rows()
    assert [q.id for q in questions] == [r["id"] for r in rows]
    assert [q.options[q.answer] for q in questions] == [r["answer"] for r in rows]


def test_questions_are_not_the_training_pairs():
    asked = {r["instruction"].lower().rstrip("?") for r in medical_qa_rows()}
    assert not any(r["question"].lower().rstrip("?:") in asked for r in medical_mcq_rows())


def test_pairs_as_messages_in_the_quickstart_data():
    data = quickstart_datasets(n_chitchat_train=0, n_chitchat_eval=0, n_medical_eval=1)["train"]
    assert set(data.column_names) == {"id", "source", "messages"}
    assert set(data["source"]) == {"medical_qa"} and len(data) == len(medical_qa_rows()) - 1
    first = data[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"] and all(m["content"] for m in first)
