"""Every recipe parses (so none rots), overrides work, and bad recipes fail before any model loads."""

import subprocess
import sys
from pathlib import Path

import pytest

from sftmix.recipe import load_recipe

RECIPES = sorted(Path(__file__).parents[1].glob("recipes/**/*.yaml"))
# The paper's experiments (not the CPU quickstart, not the study's scaled-down regimes)
PAPER = [p for p in RECIPES if not {"quickstart", "study"} & set(p.parts)]


def test_there_are_recipes_for_the_paper_and_the_quickstart():
    names = {str(p.relative_to(p.parents[2])) for p in RECIPES if "quickstart" not in str(p)}
    assert {
        "llama-3.1-8b/alpaca/sftmix.yaml",
        "mistral-7b/ultrachat/ntp.yaml",
        "qwen2.5-14b/alpaca/sftmix.yaml",
    } <= names
    assert any("quickstart" in str(p) for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_every_recipe_parses(path):
    recipe = load_recipe(path)
    assert recipe.model.model_name_or_path
    assert recipe.training.output_dir
    if path.stem.startswith("ntp"):
        assert recipe.training.mixup_weight == 0
    else:
        assert recipe.training.mixup_weight > 0 and recipe.dynamics is not None
    if "lora" in path.stem:
        assert recipe.model.use_peft
    if "qlora" in path.stem:
        assert recipe.model.load_in_4bit
    if path in PAPER:  # the paper's hyperparameters
        assert recipe.training.learning_rate in (2e-6, 1e-4)
        assert recipe.training.weight_decay == 0.1 and recipe.training.warmup_steps == 0.1
        assert recipe.training.lr_scheduler_type == "cosine"


def test_command_line_flags_override_the_yaml():
    recipe = load_recipe(RECIPES[0], ["--learning_rate", "3e-6", "--mixup_weight", "0.5"])
    assert recipe.training.learning_rate == 3e-6 and recipe.training.mixup_weight == 0.5


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\nmixup_wieght: 0.2\n")
    with pytest.raises(ValueError, match="'mixup_wieght' \\(did you mean 'mixup_weight'\\?\\)"):
        load_recipe(bad)
    bad.write_text("model_name_or_path: x\ndynamics:\n  num_checkpointz: 2\n")
    with pytest.raises(ValueError, match="num_checkpointz"):
        load_recipe(bad)
    bad.write_text("model_name_or_path: x\ndynamics: [2]\n")
    with pytest.raises(ValueError, match="`dynamics:` in .* must be a mapping of settings"):
        load_recipe(bad)


def test_packing_with_sftmix_is_refused_while_parsing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\npacking: true\n")
    with pytest.raises(ValueError, match="packing=True"):
        load_recipe(bad)


def test_missing_data_file_fails_before_any_model_loads(tmp_path):
    from sftmix.pipeline import run_train

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"model_name_or_path: /nonexistent/model\ndataset_files: [{tmp_path}/none.jsonl]\noutput_dir: {tmp_path}\n"
    )
    with pytest.raises(ValueError, match="(?s)none.jsonl does not exist.*/nonexistent/model does not exist"):
        run_train(load_recipe(bad))  # both problems, reported together


def test_cli_help_is_fast_and_lists_the_stages():
    done = subprocess.run([sys.executable, "-m", "sftmix", "--help"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0
    for stage in ("run", "dynamics", "train", "eval"):
        assert stage in done.stdout
    # lazy start-up: no torch / transformers / trl import behind --help
    probe = "import sys, sftmix.cli; sftmix.cli.build_parser(); print(any(m in sys.modules for m in ('torch', 'transformers', 'trl')))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("path", PAPER, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_paper_recipes_are_resumable_and_say_what_it_costs_on_disk(path):
    recipe = load_recipe(path)
    assert recipe.training.save_only_model is False  # checkpoints keep the optimizer state
    assert recipe.training.save_total_limit == 1
    text = path.read_text()
    assert "--resume_from_checkpoint true" in text and "GB" in text
    if recipe.dynamics is not None:  # and the reference run's checkpoints, separately
        assert "_dynamics/reference/" in text
