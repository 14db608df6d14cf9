"""Benchmark readers on small hand-written files in the published formats, the settings' checks, the Hub fallback."""

import json
from pathlib import Path

import pytest

from sftmix.evaluation.benchmarks import (
    BenchmarkFormatError,
    load_benchmark,
    read_medmcqa,
    read_medqa,
    read_pubmedqa,
)
from sftmix.evaluation.config import EvalConfig

DATA = Path(__file__).parent / "data"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_medqa_4_and_5_option_files():
    four = read_medqa(DATA / "medqa_4options.jsonl", num_options=4)
    assert [q.answer for q in four] == [1, 2, 3]  # B, C, D
    assert four[0].options[1] == "Right coronary artery" and four[0].letters == ["A", "B", "C", "D"]
    five = load_benchmark("medqa5", str(DATA / "medqa_5options.jsonl"))
    assert [q.answer for q in five] == [1, 4, 0]  # B, E, A
    assert five[1].options[4] == "Streptococcus pyogenes" and len(five[1].letters) == 5


def test_medqa_option_count_mismatch_names_the_right_setting():
    with pytest.raises(BenchmarkFormatError, match=r"has 5 options .* expects 4.*`medqa5`"):
        load_benchmark("medqa", str(DATA / "medqa_5options.jsonl"))
    with pytest.raises(BenchmarkFormatError, match=r"has 4 options .* expects 5"):
        load_benchmark("medqa5", str(DATA / "medqa_4options.jsonl"))


def test_medqa_options_as_key_value_list_and_inconsistent_answer(tmp_path):
    row = {
        "question": "q?",
        "options": [{"key": "A", "value": "x"}, {"key": "B", "value": "y"}],
        "answer_idx": "B",
        "answer": "y",
    }
    assert read_medqa(write_jsonl(tmp_path / "a.jsonl", [row]))[0].answer == 1
    with pytest.raises(BenchmarkFormatError, match=r"row 0: `answer` 'x' is not the text of option B"):
        read_medqa(write_jsonl(tmp_path / "b.jsonl", [{**row, "answer": "x"}]))


def test_unexpected_columns_are_named_with_the_expected_format(tmp_path):
    path = write_jsonl(tmp_path / "wrong.jsonl", [{"prompt": "q", "choices": ["a", "b"], "label": 0}])
    with pytest.raises(BenchmarkFormatError) as error:
        load_benchmark("medqa", str(path))
    message = str(error.value)
    assert "['choices', 'label', 'prompt']" in message and "answer_idx" in message and "MedQA US release" in message
    with pytest.raises(BenchmarkFormatError, match=r"lacks \['question', 'opa', 'opb', 'opc', 'opd', 'cop'\]"):
        load_benchmark("medmcqa", str(path))


def test_medmcqa_original_release_is_one_based_and_hf_copy_zero_based():
    original = read_medmcqa(DATA / "medmcqa_dev.json")  # .json holding one object per line, cop 1-4
    hf = load_benchmark("medmcqa", str(DATA / "medmcqa_hf.jsonl"))  # cop 0-3
    assert [q.answer for q in original] == [1, 3, 0] == [q.answer for q in hf]
    assert original[1].options[3] == "Ethosuximide" and original[0].id == "0a1b2c3d-0001"


def test_medmcqa_ambiguous_base_follows_the_setting(tmp_path, caplog):
    row = {"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d"}
    path = write_jsonl(tmp_path / "m.jsonl", [{**row, "cop": 1}, {**row, "cop": 2}])
    assert [q.answer for q in read_medmcqa(path)] == [0, 1]  # local files default to the original 1-4
    assert "fit both" in caplog.text
    assert [q.answer for q in read_medmcqa(path, answer_base="0")] == [1, 2]
    with pytest.raises(BenchmarkFormatError, match="no public answers"):
        read_medmcqa(write_jsonl(tmp_path / "t.jsonl", [{**row, "cop": -1}]))
    with pytest.raises(BenchmarkFormatError, match="outside 0-3"):
        read_medmcqa(write_jsonl(tmp_path / "o.jsonl", [{**row, "cop": 4}]), answer_base="0")


@pytest.mark.parametrize("name", ["pubmedqa_ori_pqal.json", "pubmedqa_pqa_labeled.jsonl"])
def test_pubmedqa_both_formats(name):
    questions = read_pubmedqa(DATA / name)
    assert [q.id for q in questions] == ["10000001", "10000002", "10000003"]
    assert [q.answer for q in questions] == [0, 1, 2]  # yes, no, maybe
    assert questions[0].options == ["yes", "no", "maybe"]
    assert questions[1].context[0] == "We followed 200 runners for one winter season."
    assert len(questions[2].context) == 2


def test_pubmedqa_test_ids_and_context_switch():
    kept = load_benchmark(
        "pubmedqa",
        str(DATA / "pubmedqa_ori_pqal.json"),
        pubmedqa_ids=str(DATA / "pubmedqa_test_ground_truth.json"),
        pubmedqa_context=False,
    )
    assert [q.id for q in kept] == ["10000001", "10000003"] and kept[0].context == []
    with pytest.raises(BenchmarkFormatError, match="goes to `pubmedqa_ids`"):
        load_benchmark("pubmedqa", str(DATA / "pubmedqa_test_ground_truth.json"))


def test_pubmedqa_ids_on_bigbio_rows_without_pmids_are_refused_with_the_fix(tmp_path):
    bigbio = write_jsonl(
        tmp_path / "bigbio.jsonl",
        [{"QUESTION": "Q?", "CONTEXTS": ["c"], "final_decision": "yes", "LONG_ANSWER": "l"}] * 2,
    )
    assert [q.id for q in load_benchmark("pubmedqa", str(bigbio))] == ["0", "1"]  # no filter: fine
    with pytest.raises(BenchmarkFormatError, match="carry no PMID.*Pass ori_pqal.json"):
        load_benchmark("pubmedqa", str(bigbio), pubmedqa_ids=str(DATA / "pubmedqa_test_ground_truth.json"))
    with_ids = write_jsonl(
        tmp_path / "bigbio_ids.jsonl",
        [
            {"PUBMED_ID": pmid, "QUESTION": "Q?", "CONTEXTS": ["c"], "final_decision": "no"}
            for pmid in (10000001, 7, 10000003)
        ],
    )
    kept = load_benchmark("pubmedqa", str(with_ids), pubmedqa_ids=str(DATA / "pubmedqa_test_ground_truth.json"))
    assert [q.id for q in kept] == ["10000001", "10000003"]


def test_max_examples_and_parquet(tmp_path):
    import pandas as pd

    rows = [json.loads(line) for line in (DATA / "pubmedqa_pqa_labeled.jsonl").read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")  # struct column comes back with numpy arrays
    questions = load_benchmark("pubmedqa", str(tmp_path / "p.parquet"), max_examples=2)
    assert [q.answer for q in questions] == [0, 1] and questions[0].context == rows[0]["context"]["contexts"]


def test_hub_source_offline_fails_with_the_local_file_hint(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as error:
        load_benchmark("medqa", "hub")
    message = str(error.value)
    assert "GBaker/MedQA-USMLE-4-options-hf" in message and "offline" in message and "--medqa FILE" in message
    with pytest.raises(ValueError, match="no default Hub dataset"):
        load_benchmark("medqa5", "hub")


def test_bad_settings_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match="`benchmark_style` must be one of"):
        EvalConfig(benchmark_style="letters")
    with pytest.raises(ValueError, match="`headline` must be one of"):
        EvalConfig(headline="f1")
    with pytest.raises(ValueError, match="`batch_size` must be at least 1"):
        EvalConfig(batch_size=0)


def test_missing_benchmark_file_is_named_before_loading_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`medmcqa` names .*nope.json.*'hub'"):
        EvalConfig(medmcqa=str(tmp_path / "nope.json")).check_sources()
    EvalConfig(medqa="hub", medqa5=str(DATA / "medqa_5options.jsonl")).check_sources()


def test_an_unreachable_hub_benchmark_names_the_offline_switch_and_the_local_file_fix(monkeypatch):
    from sftmix.evaluation.benchmarks import load_hub_rows

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")  # huggingface_hub's spellings: 1, true, yes, on
    with pytest.raises(RuntimeError, match=r"nobody/missing-medqa.*with offline mode on.*`medqa: FILE`"):
        load_hub_rows("medqa", "hub:nobody/missing-medqa")
