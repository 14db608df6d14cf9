"""The study's uncurated regime: the corruption rule of `sftmix/quickstart-noisy`, the `mark_column` carried into
the scores file, the review list and the data map, `drop_least_confident`, and the regime's smallest study."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from dynamics_helpers import save_checkpoints, sft_config
from helpers import cpu_args, tiny_model
from matplotlib.image import imread
from test_study import smoke_study

from sftmix import SFTMixTrainer
from sftmix.dynamics import DynamicsConfig, compute_dynamics
from sftmix.dynamics.output import draw_data_map
from sftmix.quickstart.data import quickstart_datasets, swap_responses
from sftmix.scores import dataset_example_ids
from sftmix.testing import make_conversations


def last_response(row):
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"][-1]


def test_the_noisy_quickstart_swaps_30_percent_of_the_training_responses():
    clean, noisy = quickstart_datasets(), quickstart_datasets(noise=0.3)
    train, original = noisy["train"].to_list(), clean["train"].to_list()
    marked = [i for i, row in enumerate(train) if row["corrupted"]]
    assert len(marked) == round(0.3 * len(train))
    originals = {last_response(original[i]) for i in marked}
    for row, before in zip(train, original, strict=True):
        assert row["messages"][:-1] == before["messages"][:-1]  # only the last (assistant) turn may change
        if row["corrupted"]:
            assert last_response(row) != last_response(before) and last_response(row) in originals
        else:
            assert row["messages"] == before["messages"]
    assert noisy["eval"].to_list() == clean["eval"].to_list()  # the held-out split stays clean
    assert swap_responses(original, 0.3, seed=3) == swap_responses(original, 0.3, seed=3)


def marked_conversations(n=16):
    rows = make_conversations(n, seed=0)
    for i, row in enumerate(rows):
        row["corrupted"] = i % 4 == 0
    return Dataset.from_list(rows)


def test_the_mark_column_reaches_the_scores_file_review_and_data_map(tmp_path, tiny_tokenizer):
    data = marked_conversations()
    checkpoints = save_checkpoints(tmp_path / "checkpoints", tiny_tokenizer)
    args = DynamicsConfig(
        scores_path=str(tmp_path / "scores.parquet"), checkpoints=checkpoints, mark_column="corrupted"
    )
    compute_dynamics(None, data, args, processing_class=tiny_tokenizer, sft_args=sft_config(tmp_path))
    frame = pd.read_parquet(tmp_path / "scores.parquet")
    assert frame["corrupted"].tolist() == [data[int(r)]["corrupted"] for r in frame["row_index"]]
    review = pd.read_csv(tmp_path / "review.csv")
    assert review["corrupted"].tolist() == [data[int(r)]["corrupted"] for r in review["row_index"]]
    assert "are marked `corrupted`" in (tmp_path / "review.md").read_text()
    # the data map circles the marked rows: the same frame drawn without the mark differs
    plain = draw_data_map(frame.drop(columns="corrupted"), tmp_path / "plain.png")
    assert not np.array_equal(imread(plain), imread(tmp_path / "data_map.png"))

    with pytest.raises(ValueError, match="is not a column of the training data"):
        compute_dynamics(
            None,
            data.remove_columns("corrupted"),
            args,
            processing_class=tiny_tokenizer,
            sft_args=sft_config(tmp_path),
        )


def test_the_training_mode_carries_the_mark_column(tmp_path, tiny_tokenizer):
    data = marked_conversations()
    args = cpu_args(tmp_path, training_dynamics=True, max_steps=-1, num_train_epochs=1)
    trainer = SFTMixTrainer(
        tiny_model(tiny_tokenizer),
        args,
        train_dataset=data,
        processing_class=tiny_tokenizer,
        dynamics=DynamicsConfig(mark_column="corrupted"),
    )
    trainer.train()
    frame = pd.read_parquet(tmp_path / "_dynamics" / "scores.parquet")
    assert len(frame) == 16
    assert frame["corrupted"].tolist() == [data[int(r)]["corrupted"] for r in frame["row_index"]]


def test_drop_least_confident_trains_without_the_lowest_scores(tmp_path, tiny_tokenizer):
    data = Dataset.from_list(make_conversations(20, seed=1))
    ids = dataset_example_ids(data)
    confidence = -np.arange(1.0, 21.0)  # row i: confidence -(i + 1); the last rows are the least confident
    frame = pd.DataFrame(
        {"example_id": ids, "row_index": range(20), "confidence": confidence, "confident": confidence > -10.5}
    )
    path = tmp_path / "scores.parquet"
    frame.to_parquet(path)
    for weight in (0.0, 0.2):
        args = cpu_args(
            tmp_path / f"w{weight}", mixup_weight=weight, dynamics_path=str(path), drop_least_confident=0.3
        )
        trainer = SFTMixTrainer(tiny_model(tiny_tokenizer), args, train_dataset=data, processing_class=tiny_tokenizer)
        assert len(trainer.train_dataset) == 14  # floor(0.3 x 20) = 6 dropped
        remaining = {r["messages"][0]["content"] + r["messages"][1]["content"] for r in trainer.train_dataset}
        expected = {r["messages"][0]["content"] + r["messages"][1]["content"] for r in data.select(range(14))}
        assert remaining == expected
    with pytest.raises(ValueError, match="drops examples by the scores of `dynamics_path`"):
        cpu_args(tmp_path, mixup_weight=0.0, drop_least_confident=0.3)


@pytest.mark.slow
def test_the_smallest_noisy_study_reports_detection(tmp_path, tiny_model_dir):
    out = tmp_path / "study"
    cmd = smoke_study(tiny_model_dir, out) + ["--seeds", "0", "--regimes", "noisy"]
    cmd += ["--arms", "sftmix_training", "sftmix_ifd"]  # (and NTP; the drop arm's selection is tested above)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "study.json").read_text())
    assert set(results["noisy"]) == {"ntp", "sftmix_training", "sftmix_ifd"}
    found = results["detection"]["noisy"]
    assert set(found) == {
        "paper mode (one-epoch reference)",
        "IFD (the same checkpoints)",
        "IFD of the untrained model",
        "training mode",
    }
    split = pd.read_parquet(out / "noisy" / "split" / "scores.parquet")
    by_ifd = pd.read_parquet(out / "noisy" / "split" / "ifd" / "scores.parquet")
    # the same checkpoints: the paper's perplexities again, beside the IFD that ranks the rows
    assert by_ifd["perplexities"].tolist() == [pytest.approx(p, rel=1e-5) for p in split["perplexities"]]
    assert by_ifd["confidence"].tolist() == pytest.approx((-by_ifd["ifd"]).tolist())
    assert not (out / "noisy" / "split" / "reference").exists()  # its checkpoints deleted once scored
    assert (
        "--dynamics_path " + str(out / "noisy" / "split" / "ifd" / "scores.parquet")
        in (results["noisy"]["sftmix_ifd"][0]["command"])
    )
    assert "IFD's cost" in (out / "study.md").read_text()
    ifd = found["IFD (the same checkpoints)"][0]  # apart on rows with one reply and with several ("k of n")
    counts = [int(ifd[f"corrupted_{p}"].split(" of ")[1]) for p in ("single_turn", "multi_turn")]
    assert sum(counts) == len(by_ifd) and min(counts) > 0
    assert (out / "noisy_ifd_data_map.png").is_file()
    assert split["corrupted"].any() and not split["corrupted"].all()
    assert found["paper mode (one-epoch reference)"][0]["corrupted_share"] == pytest.approx(split["corrupted"].mean())
    assert 0.0 <= found["training mode"][0]["auroc"] <= 1.0
    assert (out / "noisy_data_map.png").stat().st_size > 10_000
    assert "Do the dynamics find the corrupted rows?" in (out / "study.md").read_text()
