"""Online dynamics (`--dynamics.mode online`): the SFTMix run's own NTP warm-up supplies the split, within one
learning-rate schedule; interrupted in the warm-up or after the switch, it resumes to the same weights."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli_options import sftmix, tiny_recipe

from sftmix import cli
from sftmix.scores import read_scores


def online_recipe(directory: Path, model_dir) -> Path:
    return tiny_recipe(
        directory,
        model_dir,
        max_steps=-1,
        num_train_epochs=1,
        learning_rate="1.0e-3",
        dynamics="\n  mode: online\n  online_warmup_ratio: 0.3\n  scoring_batch_size: 8",
    )


def history(run_dir: Path) -> dict[int, dict]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return {h["step"]: h for h in state["log_history"] if "loss" in h}


def weights(run_dir: Path) -> torch.Tensor:
    state = load_file(run_dir / "model.safetensors")
    return torch.cat([state[k].flatten().float() for k in sorted(state)])


def test_online_run_is_ntp_then_mixup_on_one_schedule(tmp_path, tiny_model_dir):
    """24 examples, batch 4: 6 steps; warm-up 0.3 -> 2 NTP steps, scored, then 4 SFTMix steps."""
    recipe = online_recipe(tmp_path / "recipe", tiny_model_dir)
    out = tmp_path / "recipe" / "out"
    done = sftmix("run", "--config", str(recipe), "--mixup_weight", "0.2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = sftmix("run", "--config", str(recipe), "--output_dir", str(tmp_path / "ntp"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    online, ntp = history(out), history(tmp_path / "ntp")
    assert sorted(online) == sorted(ntp) == list(range(1, 7))  # the run's length: no extra training
    assert all("mixup_loss" not in online[s] for s in (1, 2)) and all(
        "mixup_loss" in online[s] for s in range(3, 7)
    )
    for step in range(1, 7):  # one schedule: the same learning rate at every step as plain SFT
        assert online[step]["learning_rate"] == pytest.approx(ntp[step]["learning_rate"], rel=1e-9)
    for step in (1, 2):  # the warm-up is plain SFT: same data order, same losses
        assert online[step]["loss"] == pytest.approx(ntp[step]["loss"], abs=1e-5)
    frame, metadata = read_scores(out / "dynamics" / "scores.parquet")
    assert metadata["online"]["warmup_steps"] == 2 and metadata["online"]["total_steps"] == 6
    assert frame["confident"].sum() == len(frame) // 2
    assert not list(
        (out / "dynamics" / "reference").glob("checkpoint-*")
    )  # warm-up checkpoint deleted after use


class Interrupt(Exception):
    pass


def interrupt_at(monkeypatch, step: int):
    """A pre-emption at the end of optimizer step `step` (after its checkpoint, if one is saved there)."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupt(f"pre-empted at step {step}")

    from transformers import Trainer

    init = Trainer.__init__

    def with_stop(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(Stop())

    monkeypatch.setattr(Trainer, "__init__", with_stop)
    return init


@pytest.mark.parametrize(
    "where, extra",
    [
        ("warm-up", ["--dynamics.online_checkpoints", "2"]),  # warm-up checkpoints at steps 1 and 2
        ("after the switch", ["--save_strategy", "steps", "--save_steps", "4"]),
    ],
)
def test_online_run_resumes_to_the_same_weights(tmp_path, tiny_model_dir, monkeypatch, where, extra):
    recipe = online_recipe(tmp_path / "recipe", tiny_model_dir)
    common = ["--mixup_weight", "0.2", *extra]
    assert cli.main(["run", "--config", str(recipe), *common, "--output_dir", str(tmp_path / "whole")]) == 0

    init = interrupt_at(monkeypatch, 2 if where == "warm-up" else 4)
    run = ["run", "--config", str(recipe), *common, "--output_dir", str(tmp_path / "resumed")]
    with pytest.raises(Interrupt):
        cli.main(run)
    monkeypatch.setattr("transformers.Trainer.__init__", init)
    assert cli.main([*run, "--resume_from_checkpoint", "true"]) == 0
    torch.testing.assert_close(
        weights(tmp_path / "resumed"), weights(tmp_path / "whole"), atol=1e-6, rtol=1e-5
    )
    resumed, whole = history(tmp_path / "resumed"), history(tmp_path / "whole")
    for step in range(3, 7):
        assert resumed[step]["mixup_loss"] == pytest.approx(whole[step]["mixup_loss"], abs=1e-6)
