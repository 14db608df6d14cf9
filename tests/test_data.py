import json

import pytest
from datasets import Dataset

from sftmix.data import DataArguments, DataError, detect_format, load_sft_data, to_sft_format


def test_alpaca_rows_become_messages_with_the_input_after_the_instruction():
    data = Dataset.from_list(
        [
            {"instruction": "Name a fruit.", "input": "", "output": "Apple.", "text": "ignored"},
            {"instruction": "Translate.", "input": "bonjour", "output": "hello", "text": "ignored"},
        ]
    )
    out = to_sft_format(data)
    assert out.column_names == ["messages"]
    assert out[1]["messages"] == [
        {"role": "user", "content": "Translate.\n\nbonjour"},
        {"role": "assistant", "content": "hello"},
    ]
    assert out[0]["messages"][0]["content"] == "Name a fruit."


def test_sharegpt_is_converted_and_extra_columns_are_dropped_but_the_group_column_kept():
    data = Dataset.from_list(
        [
            {
                "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
                "id": 3,
                "confident": True,
            }
        ]
    )
    out = to_sft_format(data)
    assert out.column_names == ["messages", "confident"]
    assert out[0]["messages"][1] == {"role": "assistant", "content": "hello"}


def test_ultrachat_style_rows_keep_only_messages():
    data = Dataset.from_list(
        [
            {
                "prompt": "hi",
                "prompt_id": "x",
                "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            }
        ]
    )
    assert to_sft_format(data).column_names == ["messages"]


def test_unknown_format_names_the_columns_found():
    with pytest.raises(ValueError, match=r"columns are \['answer', 'question'\]"):
        detect_format(["question", "answer"])


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no non-empty assistant message"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "role 'bot'"),
        ({"messages": [{"role": "assistant", "content": None}]}, "no text `content`"),
    ],
)
def test_a_malformed_row_is_named(row, problem):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    data = Dataset.from_list([good, good, row]) if row["messages"][0]["content"] is not None else None
    if data is None:  # Arrow cannot hold a None content next to strings in one column type: build it alone
        data = Dataset.from_list([row])
    with pytest.raises(ValueError, match=f"row {len(data) - 1}: .*{problem}"):
        to_sft_format(data)


def test_local_files_load_and_split(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    train, held_out = load_sft_data(DataArguments(dataset_files=[str(path)], eval_fraction=0.25))
    assert len(train) == 15 and len(held_out) == 5
    assert set(train["prompt"]).isdisjoint(held_out["prompt"])


def test_missing_file_and_missing_source_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        DataArguments(dataset_files=[str(tmp_path / "nope.jsonl")]).check_sources()
    with pytest.raises(ValueError, match="No data"):
        DataArguments().check_sources()


def test_an_unreachable_hub_dataset_names_the_offline_switch_and_the_fix(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")  # huggingface_hub's spellings: 1, true, yes, on
    with pytest.raises(RuntimeError, match=r"'nobody/missing-set' .*\(offline mode is on\).*`dataset_files`"):
        load_sft_data(DataArguments(dataset_name="nobody/missing-set"))
