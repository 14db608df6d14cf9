"""The command line a TRL user expects: every recipe key as an option (dotted for the sections), typed like YAML,
unknown keys with a suggestion, shipped recipes by name, paths relative to the recipe, `sftmix check`."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sftmix.recipe import builtin_recipes, find_recipe, load_recipe, parse_overrides
from sftmix.testing import make_conversations

ROOT = Path(__file__).parents[1]


def sftmix(*args, cwd, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sftmix", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_recipe(directory: Path, model_dir, **extra) -> Path:
    """A recipe whose data file is given relative to the recipe's own directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("\n".join(json.dumps(r) for r in make_conversations(24, seed=2)))
    lines = {
        "model_name_or_path": str(model_dir),
        "dataset_files": "[train.jsonl]",
        "eval_fraction": 0.0,
        "bf16": "false",
        "max_length": 64,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "gradient_checkpointing": "false",
        "logging_steps": 1,
        "save_strategy": '"no"',
        "report_to": "none",
        "dataset_num_proc": "null",
        "mixup_weight": 0.0,
        "output_dir": str(directory / "out"),
        **extra,
    }
    path = directory / "recipe.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


def test_overrides_parse_dotted_sections_nulls_flags_and_lists():
    top, sections = parse_overrides(
        [
            "--mixup_weight",
            "0.5",
            "--bf16",
            "--dynamics.num_checkpoints=3",
            "--dynamics.checkpoints",
            "a",
            "b",
        ]
        + ["--evaluation.medqa", "None", "--max_steps", "null"]
    )
    assert top == {"mixup_weight": "0.5", "bf16": "true", "max_steps": None}
    assert sections["dynamics"] == {"num_checkpoints": "3", "checkpoints": ["a", "b"]}
    assert sections["evaluation"] == {"medqa": None}
    with pytest.raises(ValueError, match="Unknown section 'dynamic'"):
        parse_overrides(["--dynamic.num_checkpoints", "3"])


def test_command_line_values_override_the_recipe_with_the_same_types(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, **{"dynamics": "\n  num_checkpoints: 2"})
    parsed = load_recipe(
        recipe,
        ["--mixup_weight", "0.3", "--dynamics.num_checkpoints", "4", "--evaluation.batch_size", "2"]
        + ["--dynamics.reference_max_steps", "null", "--max_length", "None", "--no_bf16"],
    )
    assert parsed.training.mixup_weight == 0.3 and parsed.dynamics.num_checkpoints == 4
    assert parsed.evaluation.batch_size == 2  # a section the YAML lacks is created
    assert parsed.dynamics.reference_max_steps is None and parsed.training.max_length is None
    assert parsed.training.bf16 is False
    # a relative data path resolves next to the recipe, wherever the command runs
    assert parsed.data.dataset_files == [str((tmp_path / "train.jsonl").resolve())]


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "forced", "kept"),
    [(False, False, "", False), (True, False, "", True), (False, True, "", True), (False, False, "1", True)],
)
def test_bf16_on_a_cpu_runs_in_fp32_unless_bf16_is_native_or_forced(
    tmp_path, tiny_model_dir, monkeypatch, caplog, avx512_bf16, amx, forced, kept
):
    """Native bf16 means AVX512-BF16 or AMX: an AVX512 CPU that only emulates bf16 (oneDNN says it "supports" it)
    runs a recipe's `bf16: true` in fp32, with the warning; SFTMIX_CPU_BF16=1 keeps bf16."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv("SFTMIX_CPU_BF16", forced)
    with caplog.at_level("WARNING", logger="sftmix.recipe"):
        parsed = load_recipe(tiny_recipe(tmp_path, tiny_model_dir, bf16="true", use_cpu="true"))
    assert parsed.training.bf16 is kept
    assert ("no native bf16" in caplog.text) is not kept


def test_unknown_and_mistyped_command_line_keys_are_errors_with_suggestions(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(ValueError, match=r"--mixup_wieght \(did you mean --mixup_weight\?\)"):
        load_recipe(recipe, ["--mixup_wieght", "0.2"])
    with pytest.raises(ValueError, match=r"--dynamics.num_chekpoints \(did you mean --dynamics.num_checkpoints\?\)"):
        load_recipe(recipe, ["--dynamics.num_chekpoints", "3"])
    with pytest.raises(ValueError, match="mixup_weight.*expected a number"):
        load_recipe(recipe, ["--mixup_weight", "lots"])


def test_keys_from_trl_and_the_handbook_name_the_sftmix_equivalent(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, datasets="\n  - path: tatsu-lab/alpaca", chat_template='"x"')
    with pytest.raises(ValueError, match="`datasets`: .*dataset_files.*`chat_template`: .*chat_template_path"):
        load_recipe(recipe)


def test_shipped_recipes_are_found_by_name():
    names = builtin_recipes()
    assert "quickstart/sftmix" in names and "llama-3.1-8b/alpaca/sftmix" in names and len(names) >= 22
    assert find_recipe("quickstart").name == "sftmix.yaml"
    assert find_recipe("llama-3.1-8b/alpaca/sftmix_lora").parent.name == "alpaca"
    with pytest.raises(FileNotFoundError, match="did you mean.*quickstart/sftmix"):
        find_recipe("quickstrat/sftmix")


def test_the_wheel_carries_the_recipes_and_templates(tmp_path):
    import shutil

    source = tmp_path / "source"  # a copy: setuptools writes build/ into the tree it builds
    for name in ("sftmix", "recipes"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    wheel_dir = tmp_path / "wheel"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
        ]
        + [str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheel_dir.glob("sftmix-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {n for n in names if n.startswith("sftmix/recipes/") and n.endswith(".yaml")}
    shipped = {f"sftmix/recipes/{p.relative_to(ROOT / 'recipes')}" for p in (ROOT / "recipes").rglob("*.yaml")}
    assert recipes == shipped
    assert {"sftmix/templates/chatml_training.jinja", "sftmix/templates/smollm2_training.jinja"} <= names


def test_help_lists_every_recipe_setting(tmp_path):
    done = sftmix("run", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for option in (
        "--mixup_weight",
        "--learning_rate",
        "--model_name_or_path",
        "--dataset_files",
        "--lora_r",
    ):
        assert option in done.stdout
    assert "--dynamics.num_checkpoints" in done.stdout and "--evaluation.medqa" in done.stdout
    assert "Weight mu of the Mixup loss" in done.stdout  # help text, not just names


def test_check_prints_settings_and_plan_or_every_problem(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path / "recipe", tiny_model_dir, mixup_weight=0.2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = sftmix("check", "--config", str(recipe), "--dynamics.num_checkpoints", "2", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "num_checkpoints: 2" in done.stdout and "mixup_weight: 0.2" in done.stdout
    assert "train examples: 24" in done.stdout
    assert "1. dynamics: reference NTP run of 2 optimizer steps, scoring 24 examples at 2 checkpoints" in done.stdout
    assert "2. train: SFTMix" in done.stdout
    assert not (tmp_path / "recipe" / "out").exists()  # nothing trained, nothing written
    done = sftmix("check", "--config", str(recipe), "--dynamics.split", "random", cwd=elsewhere)
    assert "1. dynamics: a random split of 24 examples (seeded; no reference run)" in done.stdout, done.stdout
    bad = tiny_recipe(tmp_path / "bad", tmp_path / "no-such-model", mixup_weight="yes")
    done = sftmix("check", "--config", str(bad), "--evaluation.medqa", "missing.jsonl", cwd=elsewhere)
    assert done.returncode == 1
    assert "mixup_weight" in done.stderr and "no-such-model" in done.stderr and "missing.jsonl" in done.stderr


def test_train_runs_from_another_directory_with_paths_relative_to_the_recipe(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path / "recipe", tiny_model_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = sftmix("train", "--config", str(recipe), "--max_steps", "1", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "recipe" / "out" / "sftmix_summary.json").is_file()


def test_check_and_run_count_steps_as_the_trainer_with_a_partial_accumulation_group(tmp_path, tiny_model_dir):
    """24 examples in micro-batches of 4 are 6 micro-batches; 4 accumulation steps make 2 optimizer steps an epoch
    (the Trainer rounds the partial second group up). `sftmix check`, the reference run and the SFTMix run agree."""
    recipe = tiny_recipe(
        tmp_path / "recipe",
        tiny_model_dir,
        mixup_weight=0.2,
        max_steps=-1,
        num_train_epochs=1,
        gradient_accumulation_steps=4,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = sftmix("check", "--config", str(recipe), "--dynamics.num_checkpoints", "2", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1. dynamics: reference NTP run of 2 optimizer steps" in done.stdout
    assert "2. train: SFTMix (NTP + 0.2 x Mixup), 2 optimizer steps" in done.stdout
    done = sftmix("run", "--config", str(recipe), "--dynamics.num_checkpoints", "2", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "recipe" / "out"
    reference = json.loads((out / "_dynamics" / "reference" / "sftmix_dynamics_plan.json").read_text())
    assert reference["max_steps"] == 2 and reference["steps"] == [1, 2]
    assert json.loads((out / "trainer_state.json").read_text())["max_steps"] == 2
    assert json.loads((out / "sftmix_summary.json").read_text())["steps"] == 2
