"""`sftmix eval` reports what lm-evaluation-harness's own `simple_evaluate` reports on the same tasks: lm-eval's
`medqa_4options`, `medmcqa` and `pubmedqa` (their own YAML, the dataset replaced by the test fixtures written here
in each Hub dataset's schema), on a tiny model saved to disk, question by question."""

import json
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="the `eval` extra installs lm_eval")

DATA = Path(__file__).parent / "data"


def rows(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def medqa_hub_rows():  # the MedQA US release -> GBaker/MedQA-USMLE-4-options-hf
    out = []
    for row in rows("medqa_4options.jsonl"):
        keys = sorted(row["options"])
        doc = {"sent1": row["question"], "label": keys.index(row["answer_idx"])}
        doc.update({f"ending{i}": row["options"][k] for i, k in enumerate(keys)})
        out.append(doc)
    return out


def pubmedqa_bigbio_rows():  # qiaojin/PubMedQA pqa_labeled -> bigbio/pubmed_qa source schema
    return [
        {
            "QUESTION": r["question"],
            "CONTEXTS": r["context"]["contexts"],
            "final_decision": r["final_decision"],
        }
        for r in rows("pubmedqa_pqa_labeled.jsonl")
    ]


# sftmix benchmark -> (fixture passed to sftmix, lm-eval task yaml, the same questions in the task's schema)
TASKS = {
    "medqa": ("medqa_4options.jsonl", "medqa/medqa.yaml", medqa_hub_rows),
    "medmcqa": ("medmcqa_hf.jsonl", "medmcqa/medmcqa.yaml", lambda: rows("medmcqa_hf.jsonl")),
    "pubmedqa": ("pubmedqa_pqa_labeled.jsonl", "pubmedqa/pubmedqa.yaml", pubmedqa_bigbio_rows),
}


def harness(model_dir, tmp_path, chat):
    """lm-eval's own tasks and HFLM, as a user of lm-eval would run them on local copies of the data."""
    import lm_eval.tasks
    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks = {}
    for name, (_, yaml_file, to_rows) in TASKS.items():
        data = tmp_path / f"harness_{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in to_rows()))
        config = load_yaml(Path(lm_eval.tasks.__file__).parent / yaml_file, resolve_func=True)
        config.update(
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": {"test": str(data)}},
            training_split=None,
            validation_split=None,
            test_split="test",
        )
        tasks[name] = ConfigurableTask(config=config)
    lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=1, dtype="float32")
    return simple_evaluate(model=lm, tasks=list(tasks.values()), apply_chat_template=chat, log_samples=True), tasks


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat_template"])
def test_sftmix_eval_reports_lm_evals_own_accuracies(tmp_path, tiny_model_dir, chat):
    from sftmix.cli import main

    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_model_dir), "--output_dir", str(out), "--dtype", "float32"]
    argv += ["--batch_size", "3", "--show_progress", "false", "--benchmark_chat_template", str(chat).lower()]
    for name, (fixture, _, _) in TASKS.items():
        argv += [f"--{name}", str(DATA / fixture)]
    assert main(argv) == 0
    ours = json.loads((out / "results.json").read_text())
    expected, tasks = harness(tiny_model_dir, tmp_path, chat)
    for name, task in tasks.items():
        metrics = expected["results"][task.config.task]
        assert ours["benchmarks"][name]["acc"] == metrics["acc,none"]
        assert ours["benchmarks"][name]["acc_norm"] == metrics.get("acc_norm,none")
        predictions = [json.loads(line) for line in (out / "predictions" / f"{name}.jsonl").read_text().splitlines()]
        samples = sorted(expected["samples"][task.config.task], key=lambda s: s["doc_id"])
        assert len(predictions) == len(samples) == 3
        for prediction, sample in zip(predictions, samples, strict=True):
            lls = [float(ll) for ll, _ in sample["filtered_resps"]]
            assert prediction["sum_logprobs"] == pytest.approx(lls, abs=1e-5)
            assert float(prediction["predicted"] == prediction["answer"]) == sample["acc"]


def test_medqa5_is_the_4_option_prompt_with_option_e(tmp_path, tiny_model_dir):
    """lm-eval has no 5-option MedQA task: `medqa5` is `medqa_4options`'s prompt with "E. ..." and choice E, and
    its log-likelihoods are HFLM's on those requests."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM

    from sftmix.evaluation.benchmarks import load_benchmark
    from sftmix.evaluation.lm_eval_tasks import task_config, task_doc

    questions = load_benchmark("medqa5", str(DATA / "medqa_5options.jsonl"))
    data = tmp_path / "medqa5.jsonl"
    data.write_text("".join(json.dumps(task_doc("medqa5", q)) + "\n" for q in questions))
    task = ConfigurableTask(config=task_config("medqa5", data))
    docs = list(task.test_docs())
    q = questions[0]
    options = "".join(f"{letter}. {text}\n" for letter, text in zip("ABCDE", q.options, strict=True))
    assert task.doc_to_text(docs[0]) == f"Question: {q.question}\n{options}Answer:"
    assert task.doc_to_choice(docs[0]) == ["A", "B", "C", "D", "E"] and task.doc_to_target(docs[0]) == q.answer
    lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1, dtype="float32")
    requests = [
        Instance("loglikelihood", {}, (task.doc_to_text(doc), " " + letter), i)
        for doc in docs
        for i, letter in enumerate("ABCDE")
    ]
    expected = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    from sftmix.evaluation import EvalConfig, evaluate_from_config

    config = EvalConfig(
        medqa5=str(DATA / "medqa_5options.jsonl"),
        output_dir=str(tmp_path / "e"),
        dtype="float32",
        show_progress=False,
    )
    evaluate_from_config(str(tiny_model_dir), config)
    scored = [json.loads(line) for line in (tmp_path / "e" / "predictions" / "medqa5.jsonl").read_text().splitlines()]
    assert [s for row in scored for s in row["sum_logprobs"]] == pytest.approx(expected, abs=1e-5)


def test_option_text_variant_scores_the_options_texts(tmp_path, tiny_model_dir):
    from lm_eval.api.task import ConfigurableTask

    from sftmix.evaluation.benchmarks import load_benchmark
    from sftmix.evaluation.lm_eval_tasks import task_config, task_doc

    for name, fixture in (("medqa", "medqa_4options.jsonl"), ("medmcqa", "medmcqa_hf.jsonl")):
        questions = load_benchmark(name, str(DATA / fixture))
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(task_doc(name, q)) + "\n" for q in questions))
        letters = ConfigurableTask(config=task_config(name, data))
        texts = ConfigurableTask(config=task_config(name, data, "option_text"))
        for doc, question in zip(texts.test_docs(), questions, strict=True):
            assert texts.doc_to_text(doc) == letters.doc_to_text(doc)  # lm-eval's prompt, unchanged
            assert texts.doc_to_choice(doc) == question.options and texts.doc_to_target(doc) == question.answer
        assert texts.config.task.endswith("_option_text")
