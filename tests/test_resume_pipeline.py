"""How the pipeline reads `resume_from_checkpoint`, its policy for an `output_dir` holding an earlier run, and
`sftmix run` resumed after its dynamics pass (fast: no model loads)."""

import json
from types import SimpleNamespace

import pytest

from sftmix import pipeline


def checkpoint(directory, step, complete=True):
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def args(output_dir, resume=None, **more):
    return SimpleNamespace(output_dir=str(output_dir), resume_from_checkpoint=resume, **more)


@pytest.mark.parametrize("value", [True, "true", "True", "latest"])
def test_true_in_any_spelling_means_the_latest_complete_checkpoint(tmp_path, value):
    checkpoint(tmp_path, 2), checkpoint(tmp_path, 10), checkpoint(tmp_path, 12, complete=False)
    assert pipeline.resume_checkpoint(args(tmp_path, value)) == str(tmp_path / "checkpoint-10")


@pytest.mark.parametrize("value", [None, False, "false", "False", "none", ""])
def test_unset_or_false_starts_at_step_0(tmp_path, value):
    checkpoint(tmp_path, 2)
    assert pipeline.resume_checkpoint(args(tmp_path, value)) is None


def test_true_without_any_checkpoint_starts_at_step_0(tmp_path, caplog):
    assert pipeline.resume_checkpoint(args(tmp_path / "new", "true")) is None
    assert "no complete checkpoint yet" in caplog.text


def test_a_checkpoint_path_is_used_as_given_and_checked(tmp_path):
    path = checkpoint(tmp_path / "elsewhere", 4)
    assert pipeline.resume_checkpoint(args(tmp_path, str(path))) == str(path)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint directory"):
        pipeline.resume_checkpoint(args(tmp_path, str(tmp_path / "checkpoint-99")))


def test_an_earlier_runs_checkpoints_are_never_overwritten_silently(tmp_path):
    checkpoint(tmp_path, 2)
    with pytest.raises(FileExistsError, match="checkpoint-2.*--resume_from_checkpoint true.*--overwrite_output_dir"):
        pipeline.check_output_dir(args(tmp_path))
    pipeline.check_output_dir(args(tmp_path, "true"))  # resuming
    pipeline.check_output_dir(args(tmp_path, overwrite_output_dir=True))  # the opt-out


def test_a_finished_run_without_checkpoints_and_the_reference_runs_checkpoints_are_no_conflict(tmp_path):
    # `make demo` twice: a final model, the dynamics pass with its reference checkpoints, no training checkpoint
    (tmp_path / "model.safetensors").write_text("x")
    checkpoint(tmp_path / "_dynamics" / "reference", 2)
    checkpoint(tmp_path, 3, complete=False)  # a save cut short holds nothing to lose
    pipeline.check_output_dir(args(tmp_path))


def test_sftmix_run_resumed_after_the_dynamics_pass_reuses_its_scores_file(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_dynamics", lambda recipe: calls.append("dynamics"))
    monkeypatch.setattr(pipeline, "run_train", lambda recipe, **_: calls.append("train") or {})
    monkeypatch.setattr(pipeline, "run_eval", lambda recipe: None)
    monkeypatch.setattr(pipeline, "print_summary", lambda summary: None)
    training = SimpleNamespace(
        output_dir=str(tmp_path),
        resume_from_checkpoint=None,
        mixup_enabled=True,
        dynamics_path=None,
        training_dynamics=False,
    )
    recipe = SimpleNamespace(training=training, dynamics=None, evaluation=None)

    pipeline.run_all(recipe)  # no scores file yet: the dynamics pass runs
    assert calls == ["dynamics", "train"]

    scores = tmp_path / "_dynamics" / "scores.parquet"
    scores.parent.mkdir()
    scores.write_text("done")
    calls.clear()
    training.resume_from_checkpoint = "true"
    pipeline.run_all(recipe)
    assert calls == ["train"] and training.dynamics_path == str(scores)

    calls.clear()  # pre-empted during the reference run: the dynamics pass continues it (its own resume logic)
    training.dynamics_path = None
    scores.unlink()
    pipeline.run_all(recipe)
    assert calls == ["dynamics", "train"]


def test_sftmix_run_checks_the_output_dir_before_the_dynamics_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "run_dynamics", lambda recipe: pytest.fail("dynamics ran"))
    checkpoint(tmp_path, 2)
    training = SimpleNamespace(
        output_dir=str(tmp_path),
        resume_from_checkpoint=None,
        mixup_enabled=True,
        dynamics_path=None,
        training_dynamics=False,
    )
    with pytest.raises(FileExistsError):
        pipeline.run_all(SimpleNamespace(training=training, dynamics=None, evaluation=None))
