"""Chitchat conversations (PyPI `chitchat-dataset`) as `messages`: the conversion rule and the real data."""

import importlib.util

import pytest

from sftmix.quickstart import chitchat
from sftmix.quickstart.chitchat import chitchat_messages, clean_text, to_messages
from sftmix.quickstart.data import quickstart_datasets

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("chitchat_dataset") is None, reason="chitchat-dataset is not installed"
)


def turn(sender, *texts):
    return [{"text": text, "sender": sender, "timestamp": "2018-05-05T21:01:14Z"} for text in texts]


def test_first_sender_is_the_user_and_turns_alternate():
    conversation = {"messages": [turn("b", "hi", "there"), turn("a", "hello"), turn("b", "how are you?")]}
    assert to_messages(conversation) == [
        {"role": "user", "content": "hi\nthere"},
        {"role": "assistant", "content": "hello"},
    ]  # ends on the assistant: the trailing user turn is dropped


def test_garbled_messages_are_dropped_and_the_senders_turns_merge():
    conversation = {
        "messages": [
            turn("a", "hi"),
            turn("b", "hello", ":)", "  so   good  "),
            turn("a", "???", "https://example.com/x"),  # nothing left: the turn disappears
            turn("b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaahh", "bye"),
        ]
    }
    assert to_messages(conversation) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello\nso good\nbye"},
    ]
    assert clean_text("") is None and clean_text(None) is None and clean_text("...") is None
    assert clean_text("check youtube.com/watch") is None and clean_text("I love it!") == "I love it!"


def test_caps_cut_whole_turns_and_empty_conversations_give_none():
    conversation = {"messages": [turn(s, f"message number {i}") for i, s in enumerate("abababab")]}
    assert len(to_messages(conversation, max_turns=3)) == 2
    assert len(to_messages(conversation, max_chars=40)) == 2  # 3 turns fit 40 characters; cut to end on the assistant
    assert to_messages(conversation, max_chars=10) is None
    assert to_messages({"messages": [turn("a", "alone", "still alone")]}) is None
    assert to_messages({"messages": []}) is None


def test_real_conversations_are_well_formed():
    rows = chitchat_messages(200, seed=3, max_turns=6, max_chars=800)
    assert len(rows) == 200 and set(rows.column_names) == {"id", "source", "messages"}
    assert len(set(rows["id"])) == 200
    for messages in rows["messages"]:
        roles = [m["role"] for m in messages]
        assert roles[0] == "user" and roles[-1] == "assistant" and 2 <= len(roles) <= 6
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert all(m["content"] and m["content"] == m["content"].strip() for m in messages)
        assert sum(len(m["content"]) for m in messages) <= 800


def test_sampling_is_deterministic_per_seed():
    first = chitchat_messages(30, seed=7)
    assert chitchat_messages(30, seed=7)["messages"] == first["messages"]
    assert chitchat_messages(30, seed=8)["id"] != first["id"]
    assert chitchat_messages(10, seed=7)["id"] == first["id"][:10]


def chitchat_ids(split):
    return [i for i, source in zip(split["id"], split["source"], strict=True) if source == "chitchat"]


def test_splits_are_disjoint_and_the_held_out_split_does_not_depend_on_the_training_size():
    data = quickstart_datasets(n_chitchat_train=50, n_chitchat_eval=20, seed=1)
    train, held_out = chitchat_ids(data["train"]), chitchat_ids(data["eval"])
    assert (len(train), len(held_out)) == (50, 20)
    assert set(train).isdisjoint(held_out)
    assert chitchat_ids(quickstart_datasets(n_chitchat_train=10, n_chitchat_eval=20, seed=1)["eval"]) == held_out


def test_asking_for_too_many_conversations_says_how_many_there_are():
    with pytest.raises(ValueError, match="only"):
        chitchat_messages(10_000)


def test_missing_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == chitchat.PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install chitchat-dataset"):
        chitchat.chitchat_file()
