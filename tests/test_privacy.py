"""Healthcare data stays private: short excerpts in errors (or none), and ids that do not reveal membership."""

import hashlib
import json

import pytest
from datasets import Dataset

from sftmix.data import EXCERPT_CHARS, DataArguments, DataError, excerpt, load_sft_data, to_sft_format
from sftmix.evaluation.benchmarks import BenchmarkFormatError, parse_medqa_rows
from sftmix.scores import dataset_example_ids, example_id
from sftmix.testing import make_conversations

PATIENT = "Patient Jane Roe, 54, MRN 0042-1137, presents with " + "chest pain radiating to the left arm. " * 100


def test_an_error_quotes_a_short_truncated_excerpt_of_a_row_never_the_whole_text():
    row = {"messages": [{"role": "user", "content": PATIENT}, {"role": "assistant", "content": " "}]}
    with pytest.raises(DataError) as caught:
        to_sft_format(Dataset.from_list([row]))
    message = str(caught.value)
    assert "Patient Jane Roe" in message and "..." in message
    assert len(message) < 400 and "left arm. chest pain radiating to the left arm. chest" not in message
    assert len(excerpt(PATIENT)) <= EXCERPT_CHARS + 5  # quotes and the ellipsis


def test_excerpts_can_be_turned_off_entirely(tmp_path):
    path = tmp_path / "train.jsonl"
    good = make_conversations(3)
    bad = {"messages": [{"role": "user", "content": PATIENT}, {"role": "doctor", "content": "x"}]}
    path.write_text("\n".join(json.dumps(r) for r in [*good, bad]) + "\n")
    with pytest.raises(DataError) as caught:
        load_sft_data(DataArguments(dataset_files=[str(path)], error_excerpts=False))
    message = str(caught.value)
    assert f"{path}, line 4: message 1 has role 'doctor'" in message
    assert "Jane" not in message and "excerpt hidden" in message


def test_benchmark_errors_quote_short_excerpts():
    row = {"question": "Q", "options": {"A": PATIENT, "B": "b"}, "answer_idx": "A", "answer": PATIENT + "!"}
    with pytest.raises(BenchmarkFormatError) as caught:
        parse_medqa_rows([row], "medqa")
    assert len(str(caught.value)) < 400


def rows(n=6, seed=0):
    return make_conversations(n, seed=seed)


def test_ids_match_when_the_same_rows_are_reloaded_in_any_order():
    data = Dataset.from_list(rows())
    ids = dataset_example_ids(data)
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    shuffled = data.shuffle(seed=3)
    assert sorted(dataset_example_ids(shuffled)) == sorted(ids)
    by_content = dict(zip(map(json.dumps, data["messages"]), ids, strict=True))
    assert dataset_example_ids(shuffled) == [by_content[json.dumps(m)] for m in shuffled["messages"]]
    assert dataset_example_ids(rows()) == ids  # a list of rows gives the same ids as the Dataset


def test_an_id_cannot_be_computed_from_one_candidate_text():
    data = rows()
    ids = dataset_example_ids(data)
    candidate = data[2]
    blob = json.dumps({"messages": candidate["messages"]}, sort_keys=True, ensure_ascii=False)
    # not the old unsalted content hash, nor any plain hash of the text alone
    assert ids[2] != hashlib.sha1(blob.encode()).hexdigest()[:20]
    assert ids[2] not in (hashlib.sha256(blob.encode()).hexdigest()[:32], example_id(candidate))
    # the id depends on the whole dataset: the same row in other data gets another id
    assert dataset_example_ids(data + rows(1, seed=9))[2] != ids[2]
