"""Everything a recipe names is checked before any forward pass, and all problems are reported together."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sftmix.checks import (
    RecipeProblems,
    collect_problems,
    path_or_hub_problems,
    template_problems,
    writable_problem,
)
from sftmix.data import DataArguments, DataError, load_sft_data
from sftmix.evaluation.benchmarks import BenchmarkFormatError, read_medqa, read_pubmedqa
from sftmix.evaluation.heldout import load_heldout
from sftmix.recipe import coerce_settings, load_recipe
from sftmix.scores import read_scores, write_scores
from sftmix.testing import make_conversations

GOOD = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
MEDQA_ROW = {"question": "Q?", "options": {"A": "w", "B": "x", "C": "y", "D": "z"}, "answer_idx": "B"}


def write_jsonl(path, rows, blank_after=()):
    lines = []
    for index, row in enumerate(rows):
        lines.append(row if isinstance(row, str) else json.dumps(row))
        if index in blank_after:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- data rows -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bad_row_is_named_by_its_file_and_line_whatever_the_split_seed(tmp_path, seed):
    rows = make_conversations(20, seed=0)
    rows[5] = {"messages": [{"role": "user", "content": "no answer"}]}
    path = write_jsonl(tmp_path / "train.jsonl", rows, blank_after={2})  # a blank line: line 7 holds row 5
    with pytest.raises(DataError) as caught:
        load_sft_data(DataArguments(dataset_files=[str(path)], eval_fraction=0.2, split_seed=seed))
    assert caught.value.problems == [
        f"{path}, line 7: no non-empty assistant message, so nothing to train on "
        '(row: \'{"messages": [{"role": "user", "content": "no answer"}]}\'). Fix or drop that row'
    ]


def test_undecodable_bytes_broken_json_and_bad_rows_of_every_file_are_reported_together(tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "caf\xe9"}\n')
    second = write_jsonl(tmp_path / "b.jsonl", [GOOD, GOOD, '{"messages": [', {"messages": []}])
    with pytest.raises(DataError) as caught:
        load_sft_data(DataArguments(dataset_files=[str(first), str(second)]))
    problems = caught.value.problems
    assert any(p.startswith(f"{first}, line 2: not UTF-8 (byte 0xe9") for p in problems)
    assert any(p.startswith(f"{second}, line 3: not valid JSON") for p in problems)
    assert any(p.startswith(f"{second}, line 4: `messages` must be a non-empty list") for p in problems)
    assert len(problems) == 3


def test_rows_of_a_parquet_file_are_named_by_file_and_row(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"prompt": ["q0", "q1", "q2"], "completion": ["a", " ", "c"]}).to_parquet(path)
    with pytest.raises(DataError, match=rf"{path}, row 1: empty `completion`"):
        load_sft_data(DataArguments(dataset_files=[str(path)], split_seed=7))


def test_rows_of_a_json_array_a_csv_file_and_a_second_file_are_named_where_they_are(tmp_path):
    bad = {"messages": [{"role": "user", "content": "no answer"}]}
    array = tmp_path / "train.json"
    array.write_text(json.dumps([GOOD, bad]))
    with pytest.raises(DataError, match=rf"{array}, item 1: no non-empty assistant message"):
        load_sft_data(DataArguments(dataset_files=[str(array)]))
    table = tmp_path / "train.csv"
    table.write_text('prompt,completion\n"two\nlines",a\nq, \n')
    with pytest.raises(DataError, match=rf"{table}, row 1 \(line 4\): empty `completion`"):
        load_sft_data(DataArguments(dataset_files=[str(table)]))
    first = write_jsonl(tmp_path / "a.jsonl", [GOOD, GOOD])
    second = write_jsonl(tmp_path / "b.jsonl", [GOOD, bad])
    with pytest.raises(DataError, match=rf"{second}, line 2: no non-empty"):
        load_sft_data(DataArguments(dataset_files=[str(first), str(second)]))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    (tmp_path / "header.csv").write_text("prompt,completion\n")
    for empty in (
        "blank.jsonl",
        "header.csv",
    ):  # an empty file among others is named, though datasets reads it
        files = [str(first), str(tmp_path / empty)] if empty.endswith("jsonl") else [str(tmp_path / empty)]
        with pytest.raises(DataError, match=rf"{empty}: holds no rows"):
            load_sft_data(DataArguments(dataset_files=files))
    (tmp_path / "c.jsonl").write_text(json.dumps(GOOD) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"c.jsonl, line 2: a JSON list, not an object"):
        load_sft_data(DataArguments(dataset_files=[str(tmp_path / "c.jsonl")]))


def test_an_empty_held_out_split_or_set_is_an_error_not_a_stop_iteration(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", make_conversations(10))
    with pytest.raises(DataError, match="held-out split is empty"):
        load_sft_data(DataArguments(dataset_files=[str(path)], eval_fraction=0.2, max_eval_samples=0))
    empty = tmp_path / "heldout.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="heldout.jsonl: holds no rows"):
        load_heldout(empty)
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, {"messages": [{"role": "user", "content": "a"}]}])
    with pytest.raises(
        DataError, match=r"held-out file \(`heldout`\) has 1 problem(?s:.)*bad.jsonl, line 2: no non-empty"
    ):
        load_heldout(bad)


# --- evaluation files ------------------------------------------------------------------------------------


def test_a_medqa_row_with_a_null_question_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "medqa.jsonl", [MEDQA_ROW, {**MEDQA_ROW, "question": None}])
    with pytest.raises(BenchmarkFormatError, match="row 1: `question` is NoneType"):
        read_medqa(path)


def test_pubmedqa_contexts_given_as_a_string_are_one_paragraph(tmp_path):
    path = tmp_path / "ori_pqal.json"
    record = {"QUESTION": "Does it?", "CONTEXTS": "One abstract.", "final_decision": "yes"}
    path.write_text(json.dumps({"123": record}))
    (question,) = read_pubmedqa(path)
    assert question.context == ["One abstract."]


# --- models and templates --------------------------------------------------------------------------------


def test_a_missing_model_path_says_so_and_a_folder_that_is_not_a_model_says_what_is_missing(tmp_path):
    assert path_or_hub_problems(str(tmp_path / "nope"), "model_name_or_path") == [
        f"`model_name_or_path`: {tmp_path / 'nope'} does not exist (cwd {os.getcwd()}). Fix the path."
    ]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    (problem,) = path_or_hub_problems(str(tmp_path / "half"), "model_name_or_path")
    assert "is not a saved model: it has no weights" in problem and "no tokenizer files" in problem
    assert "no config.json" not in problem


def test_a_real_model_folder_passes(tiny_model_dir):
    assert path_or_hub_problems(str(tiny_model_dir), "model_name_or_path") == []


def test_a_hub_id_is_looked_up_in_the_cache_only_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (problem,) = path_or_hub_problems("nobody-owns/this-model-xyz", "model_name_or_path")
    assert "nor in the Hugging Face cache" in problem
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert path_or_hub_problems("nobody-owns/this-model-xyz", "model_name_or_path") == []


def test_a_missing_template_says_so_and_points_at_the_packaged_one(tmp_path):
    (problem,) = template_problems("elsewhere/templates/chatml_training.jinja", "chat_template_path")
    assert "does not exist" in problem and "sftmix/templates/chatml_training.jinja" in problem


# --- recipe value types ----------------------------------------------------------------------------------


def test_recipe_values_get_the_command_lines_conversions(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", make_conversations(8))
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_files: {data}\nlearning_rate: 1e-5\n"
        f'max_steps: "4"\noutput_dir: {tmp_path / "out"}\n'
        'dynamics:\n  num_checkpoints: "3"\n  confident_fraction: "0.4"\n'
        "evaluation:\n  medmcqa_answer_base: 1\n  max_examples: null\n"
    )
    recipe = load_recipe(recipe_path)
    assert recipe.data.dataset_files == [str(data)]
    assert recipe.training.learning_rate == 1e-5 and recipe.training.max_steps == 4
    assert recipe.dynamics.num_checkpoints == 3 and recipe.dynamics.confident_fraction == 0.4
    assert recipe.evaluation.medmcqa_answer_base == "1" and recipe.evaluation.max_examples is None


def test_a_yaml_boolean_where_a_number_is_expected_names_the_key(tmp_path, tiny_model_dir):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_name: sftmix/quickstart\nmixup_weight: yes\n"
        f"output_dir: {tmp_path}\ndynamics:\n  num_checkpoints: two\n"
    )
    with pytest.raises(RecipeProblems) as caught:
        load_recipe(recipe_path)
    problems = caught.value.problems
    assert problems[0].startswith("`mixup_weight: True` in recipe") and "got bool" in problems[0]
    assert "`num_checkpoints: 'two'`" in problems[1] and "expected a whole number" in problems[1]


def test_coerce_settings_handles_optional_lists_literals_and_choices():
    from dataclasses import dataclass, field
    from typing import Literal

    @dataclass
    class Settings:
        names: list[str] | None = None
        mode: Literal["a", "b"] = "a"
        fmt: str = field(default="x", metadata={"choices": ["x", "y"]})
        limit: int | None = None
        flag: bool = False

    values, problems = coerce_settings(
        [Settings], {"names": "one", "mode": "b", "limit": None, "flag": "yes", "fmt": "x"}, "test"
    )
    assert values == {"names": ["one"], "mode": "b", "limit": None, "flag": True, "fmt": "x"}
    assert problems == []
    values, problems = coerce_settings([Settings], {"mode": "c", "fmt": "z", "limit": 2.5, "flag": 3}, "test")
    assert values == {} and len(problems) == 4


# --- scores file and output directory --------------------------------------------------------------------


def test_a_scores_file_whose_confident_column_is_not_boolean_is_refused(tmp_path):
    frame = pd.DataFrame({"example_id": ["a", "b"], "confidence": [-1.0, -2.0], "confident": ["True", "False"]})
    path = write_scores(frame, tmp_path / "scores.parquet", {})
    with pytest.raises(
        ValueError, match=r"`confident` column .* has type \w+ \(\w*string in parquet\); it must be boolean"
    ):
        read_scores(path)


def test_the_output_directory_must_be_writable(tmp_path):
    assert writable_problem(tmp_path / "new" / "deeper") is None  # created later, under a writable parent
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "is a file, not a folder" in writable_problem(blocker / "out")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "is not writable" in writable_problem(locked / "out")


def test_collect_problems_returns_the_list_a_check_command_prints(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", make_conversations(8))
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_files: [{data}]\noutput_dir: {tmp_path / 'out'}\n"
        f"mixup_weight: 0.1\ndynamics_path: {tmp_path / 'none.parquet'}\n"
    )
    problems = collect_problems(load_recipe(recipe_path))
    assert len(problems) == 1 and problems[0].startswith("`dynamics_path`: Scores file")


def test_an_evaluation_section_that_evaluates_nothing_is_refused_before_training(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", make_conversations(8))
    head = f"model_name_or_path: {tiny_model_dir}\ndataset_files: [{data}]\noutput_dir: {tmp_path / 'out'}\n"
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(head + "evaluation:\n  batch_size: 4\n")
    assert collect_problems(load_recipe(recipe_path)) == [
        "Nothing to evaluate: set `evaluation.heldout` (a held-out SFT file), `evaluation.heldout_split: true` (in a "
        "recipe), or a benchmark (`evaluation.medqa`, `evaluation.medqa5`, `evaluation.pubmedqa`, `evaluation.medmcqa`)."
    ]
    recipe_path.write_text(head + "evaluation:\n  heldout_split: true\n")
    (problem,) = collect_problems(load_recipe(recipe_path))
    assert problem.startswith("`evaluation.heldout_split: true` but the recipe has no held-out split")
    recipe_path.write_text(head + "eval_fraction: 0.25\nevaluation:\n  heldout_split: true\n")
    assert collect_problems(load_recipe(recipe_path)) == []


def test_sftmix_check_reads_the_data_once_and_again_when_a_file_changes(tmp_path, tiny_model_dir, monkeypatch):
    import sftmix.data
    from sftmix.cli import main

    data = write_jsonl(tmp_path / "train.jsonl", make_conversations(8))
    (tmp_path / "recipe.yaml").write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_files: [{data}]\noutput_dir: {tmp_path / 'out'}\n"
        "mixup_weight: 0.0\n"
    )
    reads = []
    load = sftmix.data.load_sft_data
    monkeypatch.setattr(sftmix.data, "load_sft_data", lambda *a, **k: reads.append(a) or load(*a, **k))
    assert main(["check", "--config", str(tmp_path / "recipe.yaml")]) == 0
    assert len(reads) == 1  # the check and the plan share one read
    write_jsonl(data, make_conversations(9))
    assert main(["check", "--config", str(tmp_path / "recipe.yaml")]) == 0
    assert len(reads) == 2


# --- through the command line ----------------------------------------------------------------------------


def test_sftmix_train_reports_every_problem_at_once_before_loading_a_model(tmp_path):
    rows = [GOOD] * 6
    rows[3] = {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "medqa.jsonl", [MEDQA_ROW, {**MEDQA_ROW, "answer_idx": "F"}])
    (tmp_path / "recipe.yaml").write_text(
        "model_name_or_path: ./no-such-model\n"
        "dataset_files: train.jsonl\n"  # one string: converted to a list
        "mixup_weight: yes\n"
        "output_dir: out\n"
        'dynamics:\n  num_checkpoints: "2"\n'
        "evaluation:\n  medqa: medqa.jsonl\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sftmix", "train", "--config", "recipe.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    stderr = done.stderr
    assert "4 problem(s)" in stderr, stderr
    assert "`mixup_weight: True`" in stderr and "expected a number, got bool" in stderr
    assert "train.jsonl, line 4: message 0 has role 'robot'" in stderr
    # (recipe paths resolve next to the recipe: the file is named by its full path)
    assert f"`evaluation.medqa`: medqa ({tmp_path / 'medqa.jsonl'}), row 1: answer_idx 'F'" in stderr
    assert "`model_name_or_path`: ./no-such-model does not exist" in stderr
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - started < 120  # seconds, not a training run


def test_benchmarks_without_lm_eval_are_refused_by_sftmix_check_with_the_pip_line(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    import importlib.util

    from sftmix.cli import main

    write_jsonl(tmp_path / "train.jsonl", make_conversations(8))
    write_jsonl(tmp_path / "medqa.jsonl", [MEDQA_ROW])
    (tmp_path / "recipe.yaml").write_text(
        f"model_name_or_path: {tiny_model_dir}\ndataset_files: [train.jsonl]\noutput_dir: out\n"
        "mixup_weight: 0.0\nevaluation:\n  medqa: medqa.jsonl\n"
    )
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else find_spec(name, *a)
    )
    assert main(["check", "--config", str(tmp_path / "recipe.yaml")]) != 0
    err = capsys.readouterr().err
    assert "lm-evaluation-harness, which is not installed" in err and 'pip install "sftmix[eval]"' in err
    monkeypatch.undo()
    assert main(["check", "--config", str(tmp_path / "recipe.yaml")]) == 0
