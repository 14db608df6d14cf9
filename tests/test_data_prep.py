"""`sftmix data` builds the files the healthcare recipes and `sftmix eval` read, offline from local files in the Hub
datasets' published formats (and from the Hub, here a stand-in for `datasets.load_dataset`)."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from sftmix.data_prep import BENCHMARK_FILES, MEDALPACA_FILE, PUBMEDQA_TEST_IDS, main
from sftmix.evaluation.benchmarks import load_benchmark

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
MEADOW = {
    "medical_meadow_wikidoc": [
        {
            "instruction": "Answer this question truthfully",
            "input": "What is asthma?",
            "output": "A chronic disease.",
        },
        {"instruction": "Answer this question truthfully", "input": "What is gout?", "output": ""},
    ],
    "medical_meadow_medical_flashcards": [
        {"instruction": "Answer this question truthfully", "input": "Dose of X?", "output": "10 mg daily."},
    ],
}


def write_meadow(directory):
    directory.mkdir()
    for name, rows in MEADOW.items():
        (directory / f"{name}.json").write_text(json.dumps(rows))  # the Hub repos ship one JSON list
    return directory


def test_medalpaca_from_local_copies_is_what_the_recipes_train_on(tmp_path):
    from sftmix.data import DataArguments, load_sft_data

    source = write_meadow(tmp_path / "meadow")
    out = tmp_path / "data" / "medalpaca"
    subsets = ",".join(MEADOW)
    assert main(["medalpaca", "--out", str(out), "--source", str(source), "--subsets", subsets]) == 0
    rows = [json.loads(line) for line in (out / MEDALPACA_FILE).read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["output"] == "A chronic disease."  # the empty output is left out
    for recipe in (REPO / "recipes").glob("*/medalpaca/*.yaml"):
        assert Path(yaml.safe_load(recipe.read_text())["dataset_files"][0]).name == MEDALPACA_FILE
    train, _ = load_sft_data(DataArguments(dataset_files=[str(out / MEDALPACA_FILE)], dataset_format="alpaca"))
    assert sorted(row["messages"][-1]["content"] for row in train) == ["10 mg daily.", "A chronic disease."]


def test_medalpaca_from_the_hub_uses_the_medalpaca_datasets(tmp_path, monkeypatch):
    import datasets

    asked = []

    def load_dataset(repo, split=None, **kwargs):
        asked.append((repo, split))
        return Dataset.from_list(MEADOW[repo.split("/")[1]])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert main(["medalpaca", "--out", str(tmp_path), "--subsets", ",".join(MEADOW)]) == 0
    assert asked == [(f"medalpaca/{name}", "train") for name in MEADOW]


def test_mcq_from_local_files_round_trips_through_sftmix_eval_readers(tmp_path):
    sources = {
        "medqa": DATA / "medqa_4options.jsonl",
        "medqa5": DATA / "medqa_5options.jsonl",
        "pubmedqa": DATA / "pubmedqa_pqa_labeled.jsonl",  # the Hub's qiaojin/PubMedQA rows
        "medmcqa": DATA / "medmcqa_hf.jsonl",  # the Hub's 0-based cop
    }
    argv = ["mcq", "--out", str(tmp_path)] + [f"--source={n}={p}" for n, p in sources.items()]
    assert main(argv) == 0
    for name, relative in BENCHMARK_FILES.items():
        written = load_benchmark(name, str(tmp_path / relative))
        original = load_benchmark(name, str(sources[name]))
        assert [(q.question, q.options, q.answer, q.context) for q in written] == [
            (q.question, q.options, q.answer, q.context) for q in original
        ]
    assert all('"cop": ' in line for line in (tmp_path / "medmcqa/dev.json").read_text().splitlines())
    recipe = yaml.safe_load((REPO / "recipes/llama-3.1-8b/medalpaca/sftmix.yaml").read_text())["evaluation"]
    assert {name: Path(recipe[name]).relative_to("data").as_posix() for name in BENCHMARK_FILES} == BENCHMARK_FILES
    assert recipe["pubmedqa_ids"] == f"data/{PUBMEDQA_TEST_IDS}"
    assert not (tmp_path / PUBMEDQA_TEST_IDS).exists()  # 3 questions: no official split to draw


def test_mcq_writes_the_official_pubmedqa_test_ids_beside_ori_pqal(tmp_path):
    labels = ["yes"] * 552 + ["no"] * 338 + ["maybe"] * 110  # ori_pqal.json's 1,000 labelled questions
    records = {
        str(20000000 + i): {"QUESTION": f"Q{i}?", "CONTEXTS": ["c"], "final_decision": label}
        for i, label in enumerate(labels)
    }
    (tmp_path / "ori_pqal.json").write_text(json.dumps(records))
    assert (
        main(
            [
                "mcq",
                "--out",
                str(tmp_path / "a"),
                "--benchmarks",
                "pubmedqa",
                f"--source=pubmedqa={tmp_path / 'ori_pqal.json'}",
            ]
        )
        == 0
    )
    drawn = json.loads((tmp_path / "a" / PUBMEDQA_TEST_IDS).read_text())
    assert len(drawn) == 500 and all(records[pmid]["final_decision"] == answer for pmid, answer in drawn.items())
    counts = {label: list(drawn.values()).count(label) for label in ("yes", "no", "maybe")}
    assert counts == {"yes": 276, "no": 169, "maybe": 55}  # half of each label, as the release's split
    kept = load_benchmark(
        "pubmedqa",
        str(tmp_path / "a" / BENCHMARK_FILES["pubmedqa"]),
        pubmedqa_ids=str(tmp_path / "a" / PUBMEDQA_TEST_IDS),
    )
    assert sorted(q.id for q in kept) == sorted(drawn)
    release = {pmid: records[pmid]["final_decision"] for pmid in list(records)[:7]}
    (tmp_path / "test_ground_truth.json").write_text(json.dumps(release))
    argv = [
        "mcq",
        "--out",
        str(tmp_path / "b"),
        "--benchmarks",
        "pubmedqa",
        f"--source=pubmedqa={tmp_path / 'ori_pqal.json'}",
    ]
    assert main([*argv, f"--source=pubmedqa_ids={tmp_path / 'test_ground_truth.json'}"]) == 0
    assert json.loads((tmp_path / "b" / PUBMEDQA_TEST_IDS).read_text()) == release  # the release's own file


def test_mcq_from_the_hub_skips_medqa5_and_names_the_fix_when_offline(tmp_path, monkeypatch, caplog):
    import datasets

    hub_rows = {
        "GBaker/MedQA-USMLE-4-options-hf": DATA / "medqa_4options.jsonl",
        "openlifescienceai/medmcqa": DATA / "medmcqa_hf.jsonl",
        "qiaojin/PubMedQA": DATA / "pubmedqa_pqa_labeled.jsonl",
    }

    def load_dataset(repo, config=None, split=None, **kwargs):
        rows = [json.loads(line) for line in hub_rows[repo].read_text().splitlines()]
        return Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert main(["mcq", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / BENCHMARK_FILES["medqa5"]).exists() and "medqa5 skipped" in caplog.text
    assert len(load_benchmark("medmcqa", str(tmp_path / "medmcqa/dev.json"))) == 3

    monkeypatch.undo()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert main(["mcq", "--out", str(tmp_path / "x"), "--benchmarks", "medqa"]) == 2


def test_bad_sources_are_named(tmp_path, capsys):
    assert main(["mcq", "--source", f"medqa={tmp_path / 'missing.jsonl'}"]) == 2
    assert "is not a file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "q"}]))
    assert main(["medalpaca", "--out", str(tmp_path), "--source", f"x={tmp_path / 'bad.json'}", "--subsets", "x"]) == 2
    assert "lacks ['instruction', 'output']" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["mcq", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    printed = capsys.readouterr().out
    assert exit_info.value.code == 0 and ("--source" in printed if argv[0] == "mcq" else "medalpaca" in printed)
