"""End to end: `evaluate` writes the report, `sftmix eval` loads a saved model (or a PEFT adapter) by path,
recipes' `evaluation:` sections parse, and the held-out split of a recipe's data is used when asked."""

import json
from pathlib import Path

import pytest
import yaml

from sftmix.evaluation import EvalConfig, evaluate, evaluate_from_config, heldout_metrics, load_lm
from sftmix.testing import build_tiny_llama, make_conversations

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
BENCHMARK_FILES = {
    "medqa": str(DATA / "medqa_4options.jsonl"),
    "medqa5": str(DATA / "medqa_5options.jsonl"),
    "pubmedqa": str(DATA / "pubmedqa_pqa_labeled.jsonl"),
    "medmcqa": str(DATA / "medmcqa_dev.json"),
}


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    return build_tiny_llama(len(tiny_tokenizer), seed=4).eval()


def quiet(**settings):
    return EvalConfig(show_progress=False, **settings)


def test_evaluate_writes_json_markdown_diagram_and_predictions(tmp_path, tiny_tokenizer, tiny_model):
    heldout = make_conversations(6, seed=8)
    results = evaluate(
        tiny_model,
        tiny_tokenizer,
        heldout=heldout,
        benchmarks=BENCHMARK_FILES,
        output_dir=tmp_path,
        batch_size=5,
        config=quiet(),
        model_name="runs/tiny",
    )
    # Every benchmark's numbers are those of scoring it on its own.
    for name, path in BENCHMARK_FILES.items():
        direct = evaluate(tiny_model, tiny_tokenizer, benchmarks={name: path}, config=quiet())["benchmarks"][name]
        assert results["benchmarks"][name]["acc_norm"] == direct["acc_norm"]
        assert results["benchmarks"][name]["accuracy"] == direct["acc"]  # the default headline (lm_eval style)
    assert results["benchmark_style"] == "lm_eval"
    headline = [results["benchmarks"][n]["accuracy"] for n in BENCHMARK_FILES]
    assert results["average_accuracy"] == pytest.approx(sum(headline) / 4)
    assert results["heldout"]["loss"] == pytest.approx(
        heldout_metrics(tiny_model, tiny_tokenizer, heldout, show_progress=False).loss, abs=1e-6
    )

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["benchmarks"] == results["benchmarks"] and saved["heldout"]["ece"] == results["heldout"]["ece"]
    assert len(saved["heldout"]["reliability"]["bins"]) == 15
    markdown = (tmp_path / "results.md").read_text()
    assert "| model | MedQA | MedQA-5 | PubMedQA | MedMCQA | Average |" in markdown  # the paper's column order
    row = (
        "| tiny | " + " | ".join(f"{100 * v:.2f}" for v in headline) + f" | {100 * results['average_accuracy']:.2f} |"
    )
    assert row in markdown
    assert f"{results['heldout']['loss']:.4f}" in markdown and "![reliability diagram](reliability.png)" in markdown
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    predictions = [json.loads(line) for line in (tmp_path / "predictions" / "medqa5.jsonl").read_text().splitlines()]
    assert len(predictions) == 3 and all(len(p["sum_logprobs"]) == 5 for p in predictions)
    assert sum(p["predicted"] == p["answer"] for p in predictions) / 3 == results["benchmarks"]["medqa5"]["accuracy"]


def test_headline_setting_and_max_examples(tiny_tokenizer, tiny_model):
    results = evaluate(
        tiny_model,
        tiny_tokenizer,
        benchmarks={"medqa5": BENCHMARK_FILES["medqa5"]},
        max_examples=2,
        config=quiet(headline="acc_norm", benchmark_style="option_text"),
    )
    medqa5 = results["benchmarks"]["medqa5"]
    assert medqa5["questions"] == 2 and medqa5["accuracy"] == medqa5["acc_norm"] and "heldout" not in results
    assert results["benchmark_style"] == "option_text"
    assert quiet().headline == "acc" and quiet(benchmark_style="option_text").headline == "acc_norm"
    with pytest.raises(ValueError, match=r"Unknown benchmark\(s\) \['mmlu'\]"):
        evaluate(tiny_model, tiny_tokenizer, benchmarks={"mmlu": "x.jsonl"})


def test_sftmix_eval_command_on_a_saved_model(tmp_path, tiny_model_dir, capsys):
    from sftmix.cli import main

    heldout = tmp_path / "heldout.jsonl"  # Alpaca rows: converted to messages as for training
    rows = [
        {"instruction": c["messages"][0]["content"], "input": "", "output": c["messages"][1]["content"]}
        for c in make_conversations(5)
    ]
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--heldout",
        str(heldout),
        "--medqa",
        BENCHMARK_FILES["medqa"],
    ]
    argv += [
        "--pubmedqa",
        str(DATA / "pubmedqa_ori_pqal.json"),
        "--output-dir",
        str(out),
        "--batch-size",
        "2",
    ]
    argv += ["--max-examples", "2", "--dtype", "float32", "--no_show_progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| model | MedQA | PubMedQA | Average |" in printed and str(out / "results.json") in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["benchmarks"]["medqa"]["questions"] == 2 and saved["heldout"]["examples"] == 2

    lm = load_lm(str(tiny_model_dir), EvalConfig(dtype="float32"))
    direct = evaluate(
        lm.model,
        lm.tokenizer,
        heldout=[
            {
                "messages": [
                    {"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": r["output"]},
                ]
            }
            for r in rows
        ],
        benchmarks={"medqa": BENCHMARK_FILES["medqa"]},
        config=quiet(max_examples=2),
    )
    assert saved["heldout"]["loss"] == pytest.approx(direct["heldout"]["loss"], abs=1e-6)
    assert saved["benchmarks"]["medqa"]["acc"] == direct["benchmarks"]["medqa"]["acc"]


def test_sftmix_eval_errors_name_the_fix(tmp_path, tiny_model_dir, capsys):
    from sftmix.evaluation import run_eval_cli

    with pytest.raises(SystemExit) as exit_info:
        run_eval_cli(["--model", str(tiny_model_dir)])
    assert exit_info.value.code == 2 and "Nothing to evaluate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_eval_cli(["--model", str(tiny_model_dir), "--medqa", str(tmp_path / "missing.jsonl")])
    assert "`medqa` names" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_eval_cli(["--help"])
    assert exit_info.value.code == 0 and "--max-examples" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="Could not load a model from .*PEFT adapter directory"):
        load_lm(str(tmp_path), EvalConfig())
    (tmp_path / "config.json").write_text("{}")  # what is missing is said as `sftmix check` says it
    with pytest.raises(RuntimeError, match=r"it has no weights \(\*.safetensors or \*.bin\), no tokenizer files"):
        load_lm(str(tmp_path), EvalConfig())


def test_peft_adapter_directory_loads_with_its_base_model(tmp_path, tiny_model_dir, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "adapter")  # no tokenizer saved: it comes from the base model
    rows = make_conversations(4, seed=2)
    expected = heldout_metrics(adapted.eval(), tiny_tokenizer, rows, show_progress=False).loss
    without = heldout_metrics(adapted.get_base_model(), tiny_tokenizer, rows, show_progress=False)
    with adapted.disable_adapter():
        plain = heldout_metrics(adapted, tiny_tokenizer, rows, show_progress=False).loss
    assert abs(expected - plain) > 1e-4  # the adapter matters
    assert without.loss == pytest.approx(
        expected, abs=1e-6
    )  # scoring the base model's modules includes the LoRA layers

    lm = load_lm(str(tmp_path / "adapter"), EvalConfig(dtype="float32"))
    model, tokenizer = lm.model, lm.tokenizer
    assert type(model).__name__.startswith("Peft") and tokenizer.chat_template == tiny_tokenizer.chat_template
    assert heldout_metrics(model, tokenizer, rows, show_progress=False).loss == pytest.approx(expected, abs=1e-5)


def test_recipe_evaluation_sections_are_eval_configs():
    recipes = [p for p in (REPO / "recipes").rglob("*.yaml") if "evaluation" in (yaml.safe_load(p.read_text()) or {})]
    assert recipes
    for path in recipes:
        config = EvalConfig(**yaml.safe_load(path.read_text())["evaluation"])
        assert config.heldout_split or config.benchmark_sources(), path


def test_recipe_heldout_split(tmp_path, tiny_model_dir):
    from sftmix.data import DataArguments

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_conversations(20, seed=1)))
    data_args = DataArguments(dataset_files=[str(data)], eval_fraction=0.25)
    config = quiet(heldout_split=True, medmcqa=str(DATA / "medmcqa_hf.jsonl"), output_dir=str(tmp_path / "eval"))
    results = evaluate_from_config(str(tiny_model_dir), config, data_args)
    assert results["heldout"]["examples"] == 5 and results["benchmarks"]["medmcqa"]["questions"] == 3
    assert (tmp_path / "eval" / "results.md").is_file()
    with pytest.raises(ValueError, match="no held-out split: set `dataset_test_split` or `eval_fraction`"):
        evaluate_from_config(str(tiny_model_dir), config, DataArguments(dataset_files=[str(data)]))
