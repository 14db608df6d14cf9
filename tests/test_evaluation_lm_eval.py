"""The default benchmark scoring is lm-evaluation-harness's: the same requests as its `medqa_4options`, `medmcqa`
and `pubmedqa` tasks build (their own task configs, run offline on local copies of the fixtures in the Hub
datasets' schemas), the same per-choice log-likelihoods as its `HFLM` on a tiny model saved to disk, and the same
`acc` / `acc_norm`."""

import json
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="the `test` extra installs lm_eval")

from sftmix.evaluation.benchmarks import load_benchmark  # noqa: E402
from sftmix.evaluation.loading import load_model_for_eval  # noqa: E402
from sftmix.evaluation.multiple_choice import (  # noqa: E402
    accuracy_summary,
    lm_eval_requests,
    score_questions,
)
from sftmix.evaluation.prompts import medmcqa_doc, medqa_doc, pubmedqa_doc  # noqa: E402

DATA = Path(__file__).parent / "data"
# benchmark -> (fixture, lm-eval task directory, task yaml, our question -> the task dataset's row)
TASKS = {
    "medqa": ("medqa_4options.jsonl", "medqa", "medqa.yaml", medqa_doc),
    "medmcqa": ("medmcqa_hf.jsonl", "medmcqa", "medmcqa.yaml", medmcqa_doc),
    "pubmedqa": ("pubmedqa_pqa_labeled.jsonl", "pubmedqa", "pubmedqa.yaml", pubmedqa_doc),
}


@pytest.fixture(scope="module")
def hflm(tiny_model_dir):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1, dtype="float32")


@pytest.fixture(scope="module")
def ours(tiny_model_dir):
    return load_model_for_eval(str(tiny_model_dir), "float32", "cpu")


def lm_eval_task(name, questions, tmp_path):
    """lm-eval's own task for `name`, its dataset replaced by a local file of `questions` in the task's schema."""
    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    _, directory, config_file, to_doc = TASKS[name]
    rows = tmp_path / f"{name}.jsonl"
    rows.write_text("".join(json.dumps(to_doc(q)) + "\n" for q in questions))
    config = load_yaml(Path(lm_eval.tasks.__file__).parent / directory / config_file, resolve_func=True)
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {"test": str(rows)}},
        training_split=None,
        validation_split=None,
        test_split="test",
    )
    return ConfigurableTask(config=config)


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat_template"])
@pytest.mark.parametrize("name", list(TASKS))
def test_loglikelihoods_and_accuracies_match_lm_eval(tmp_path, hflm, ours, name, chat):
    model, tokenizer = ours
    questions = load_benchmark(name, str(DATA / TASKS[name][0]))
    task = lm_eval_task(name, questions, tmp_path)
    docs = list(task.test_docs())
    options = {"apply_chat_template": chat, "chat_template": hflm.apply_chat_template if chat else None}
    requests = []
    for i, doc in enumerate(docs):
        context = task.fewshot_context(doc, num_fewshot=0, **options)
        doc_requests = task.construct_requests(doc, context, metadata=(name, i, 1), apply_chat_template=chat)
        pairs, _ = lm_eval_requests(name, questions[i], tokenizer, chat_template=chat)
        assert pairs == [r.args for r in doc_requests]  # lm-eval's prompt text, choices and delimiter
        requests.append(doc_requests)
    flat = hflm.loglikelihood([r for doc_requests in requests for r in doc_requests], disable_tqdm=True)
    scored = score_questions(
        model, tokenizer, questions, benchmark=name, chat_template=chat, batch_size=3, show_progress=False
    )
    start, harness = 0, {"acc": [], "acc_norm": []}
    for doc, doc_requests, result in zip(docs, requests, scored, strict=True):
        lls = [ll for ll, _ in flat[start : start + len(doc_requests)]]
        start += len(doc_requests)
        assert result.sum_logprobs == pytest.approx(lls, abs=1e-5)
        metrics = task.process_results(doc, [(ll, False) for ll in lls])
        for key in harness:
            harness[key].append(metrics.get(key, metrics["acc"]))
        assert float(result.predicted == result.answer) == metrics["acc"]
        if "acc_norm" in metrics:
            assert float(result.predicted_norm == result.answer) == metrics["acc_norm"]
    summary = accuracy_summary(scored)
    assert summary["acc"] == sum(harness["acc"]) / len(docs)
    if name != "pubmedqa":  # lm-eval's pubmedqa reports acc only
        assert summary["acc_norm"] == sum(harness["acc_norm"]) / len(docs)


def test_medqa5_is_the_4_option_prompt_with_option_e_and_scores_like_hflm(hflm, ours):
    """lm-eval has no 5-option MedQA task: `medqa5` is `medqa_4options`'s prompt with "E. ..." and choice E."""
    from lm_eval.api.instance import Instance

    model, tokenizer = ours
    questions = load_benchmark("medqa5", str(DATA / "medqa_5options.jsonl"))
    pairs, choices = lm_eval_requests("medqa5", questions[0], tokenizer)
    assert choices == ["A", "B", "C", "D", "E"]
    context = pairs[0][0]
    assert context.startswith("Question: ") and context.endswith(f"\nE. {questions[0].options[4]}\nAnswer:")
    requests = [
        Instance("loglikelihood", {}, pair, i)
        for q in questions
        for i, pair in enumerate(lm_eval_requests("medqa5", q, tokenizer)[0])
    ]
    expected = [ll for ll, _ in hflm.loglikelihood(requests, disable_tqdm=True)]
    scored = score_questions(model, tokenizer, questions, benchmark="medqa5", show_progress=False)
    assert [s for r in scored for s in r.sum_logprobs] == pytest.approx(expected, abs=1e-5)
