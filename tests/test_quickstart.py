"""The quickstart mix (`dataset_name: sftmix/quickstart`): chitchat + medical pairs, held out, deterministic."""

import importlib.util
from collections import Counter

import pytest

from sftmix.quickstart.data import quickstart_datasets
from sftmix.quickstart.medical import medical_qa_rows

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("chitchat_dataset") is None, reason="chitchat-dataset is not installed"
)


def test_mix_sizes_sources_and_disjoint_splits():
    data = quickstart_datasets(n_chitchat_train=60, n_chitchat_eval=15, n_medical_eval=10, seed=0)
    medical_total = len(medical_qa_rows())
    assert Counter(data["train"]["source"]) == {"chitchat": 60, "medical_qa": medical_total - 10}
    assert Counter(data["eval"]["source"]) == {"chitchat": 15, "medical_qa": 10}
    assert set(data["train"]["id"]).isdisjoint(data["eval"]["id"])
    assert data["train"]["source"][:20] != sorted(data["train"]["source"][:20])  # the sources are shuffled together


def test_mix_is_deterministic_and_its_held_out_split_is_stable():
    data = quickstart_datasets(n_chitchat_train=40, n_chitchat_eval=10, seed=5)
    assert (
        quickstart_datasets(n_chitchat_train=40, n_chitchat_eval=10, seed=5)["train"]["messages"]
        == data["train"]["messages"]
    )
    assert set(quickstart_datasets(n_chitchat_train=80, n_chitchat_eval=10, seed=5)["eval"]["id"]) == set(
        data["eval"]["id"]
    )
    assert set(quickstart_datasets(n_chitchat_train=40, n_chitchat_eval=10, seed=6)["eval"]["id"]) != set(
        data["eval"]["id"]
    )


def test_the_recipes_data_loader_accepts_the_mix():
    from sftmix.data import DataArguments, load_sft_data

    train, held_out = load_sft_data(
        DataArguments(dataset_name="sftmix/quickstart", dataset_test_split="eval", max_train_samples=32)
    )
    assert len(train) == 32 and len(held_out) == 60
    assert train.column_names == ["messages"]


def test_bad_held_out_size_is_explained():
    with pytest.raises(ValueError, match="n_medical_eval"):
        quickstart_datasets(n_medical_eval=10_000)
