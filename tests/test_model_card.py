"""The model card (paper, settings, split, data map), what `push_to_hub` uploads, and the tracker runs' names."""

import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub.utils import filter_repo_objects

from sftmix.logs import group_tracking_runs, reference_run_name, reference_tracking
from sftmix.model_card import SFTMixHubMixin
from sftmix.scores import write_scores
from sftmix.trainer import SFTMixTrainer
from tests.helpers import conversations, cpu_args, tiny_model


def fake_scores(directory: Path) -> Path:
    frame = pd.DataFrame(
        {
            "example_id": [f"id{i}" for i in range(8)],
            "confidence": [-float(i) for i in range(8)],
            "confident": [i < 4 for i in range(8)],
        }
    )
    metadata = {
        "reference_model": "tiny",
        "checkpoints": [{"label": "checkpoint-2"}, {"label": "checkpoint-4"}],
        "excluded_ids": ["x"],
        "settings": {"num_checkpoints": 2, "confident_fraction": 0.5},
    }
    path = write_scores(frame, directory / "_dynamics" / "scores.parquet", metadata)
    (directory / "_dynamics" / "data_map.png").write_bytes(b"\x89PNG fake")
    reference = directory / "_dynamics" / "reference" / "checkpoint-2"
    reference.mkdir(parents=True)
    (reference / "model.safetensors").write_text("reference weights")
    return path


def trainer_class():
    if issubclass(SFTMixTrainer, SFTMixHubMixin):
        return SFTMixTrainer
    return type("SFTMixTrainerWithCard", (SFTMixHubMixin, SFTMixTrainer), {})


@pytest.fixture
def trained(tmp_path, tiny_tokenizer):
    out = tmp_path / "out"
    args = cpu_args(out, mixup_weight=0.0, max_steps=1)
    trainer = trainer_class()(
        tiny_model(tiny_tokenizer), args, train_dataset=conversations(8), processing_class=tiny_tokenizer
    )
    trainer.train()
    args.dynamics_path = str(fake_scores(out))
    args.mixup_weight, args.mixup_alpha = (
        0.2,
        0.5,
    )  # as recorded by a Mixup run (settings only, no retraining)
    return trainer, out


def test_the_card_cites_the_paper_and_records_settings_split_and_data_map(trained):
    trainer, out = trained
    trainer.save_model(str(out))
    trainer.create_model_card()
    card = (out / "README.md").read_text()
    assert "SFTMix: Elevating Language Model Instruction Tuning with Mixup Recipe" in card
    assert "@inproceedings{xiao2026sftmix" in card and "Marzyeh Ghassemi" in card and "2410.05248" in card
    assert "| `mixup_weight` | `0.2` |" in card and "| `mixup_alpha` | `0.5` |" in card
    assert "`mixup_alignment`" in card and "`mixup_lambda_sampling`" in card
    assert "| dynamics `num_checkpoints` | `2` |" in card and "checkpoint-2, checkpoint-4" in card
    assert "8 examples scored: 4 confident, 4 unconfident, 1 excluded" in card
    assert "| confidence | -7 |" in card  # the minimum, first of the quantiles
    assert "![Data map" in card and "(data_map.png)" in card
    assert (out / "data_map.png").read_bytes() == b"\x89PNG fake"
    assert card.index("## SFTMix") < card.index("## Citations")


def test_the_card_names_the_ifd_confidence(tmp_path):
    from sftmix.model_card import sftmix_section

    path = fake_scores(tmp_path)
    frame = pd.read_parquet(path)
    write_scores(frame, path, {"settings": {"confidence": "ifd", "num_checkpoints": 2}})
    section = sftmix_section(cpu_args(tmp_path, mixup_weight=0.2), path)
    assert "| dynamics `confidence` | `ifd` |" in section
    assert "Confidence is minus the IFD (response perplexity with / without its prompt)" in section


def test_push_to_hub_uploads_the_model_but_not_the_dynamics_pass_or_checkpoints(trained, monkeypatch):
    import huggingface_hub

    trainer, out = trained
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "model.safetensors").write_text("checkpoint")
    calls = []

    def upload_folder(self, **kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    trainer.hub_model_id = "someone/sftmix-model"
    trainer.push_to_hub()
    (call,) = calls
    files = [str(p.relative_to(out)) for p in Path(call["folder_path"]).rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=call["ignore_patterns"]))
    assert {"model.safetensors", "config.json", "README.md", "data_map.png", "tokenizer.json"} <= uploaded
    assert not [f for f in uploaded if f.startswith(("_dynamics", "checkpoint-")) or "/checkpoint-" in f], uploaded
    assert "## SFTMix" in (out / "README.md").read_text()  # the card pushed is the SFTMix one


def test_pushes_at_each_save_skip_the_dynamics_pass_and_checkpoints(tmp_path, tiny_tokenizer, monkeypatch):
    from concurrent.futures import Future

    import huggingface_hub

    out = tmp_path / "out"
    fake_scores(out)
    calls, done = [], Future()
    done.set_result(None)
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: huggingface_hub.RepoUrl("someone/m")
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(kw) or done)
    args = cpu_args(out, mixup_weight=0.0, max_steps=1, save_strategy="steps", save_steps=1, push_to_hub=True)
    trainer = trainer_class()(
        tiny_model(tiny_tokenizer), args, train_dataset=conversations(8), processing_class=tiny_tokenizer
    )
    trainer.train()  # saves checkpoint-1 and pushes output_dir from it
    (call,) = calls
    files = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=call["ignore_patterns"]))
    assert "model.safetensors" in uploaded and (out / "checkpoint-1").is_dir()
    assert not [f for f in uploaded if f.startswith(("_dynamics", "checkpoint-"))], uploaded


def test_sftmix_trainer_writes_the_sftmix_card_and_skips_the_caches_on_push():
    assert issubclass(SFTMixTrainer, SFTMixHubMixin)


def test_the_reference_run_and_the_sftmix_run_are_two_runs_of_one_group(tmp_path, monkeypatch):
    from sftmix.dynamics import DynamicsConfig
    from sftmix.dynamics.config import reference_training_config

    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    args = cpu_args(tmp_path / "my-run", report_to="none")
    assert group_tracking_runs(args) == "my-run" and args.run_name == "my-run"
    assert os.environ["WANDB_RUN_GROUP"] == "my-run"
    assert reference_run_name("my-run") == "my-run-reference" and reference_run_name(None) is None
    reference = reference_training_config(args, tmp_path / "my-run" / "_dynamics" / "reference", DynamicsConfig(), 8)
    assert reference.run_name == "my-run-reference"


def test_the_reference_run_has_its_own_tensorboard_folder_and_wandb_run(monkeypatch):
    finished = []
    fake_wandb = types.SimpleNamespace(run=object(), finish=lambda: finished.append(True))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/logs/tb")
    with reference_tracking(types.SimpleNamespace(run_name="my-run-reference")):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == os.path.join("/logs/tb", "my-run-reference")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "/logs/tb" and finished == [True]
