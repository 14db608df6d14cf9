"""The healthcare benchmarks as lm-evaluation-harness tasks, scored by lm-eval itself (`simple_evaluate`): lm-eval's own
task definitions (or `tasks/medqa5.yaml`), their dataset replaced by the questions sftmix read and checked, and the
`option_text` variant; docs/evaluation.md ("Benchmarks, scored by lm-evaluation-harness itself").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sftmix.evaluation.benchmarks import PUBMEDQA_OPTIONS

logger = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).parent / "tasks"
# benchmark -> the YAML of its task: lm-eval's (under lm_eval/tasks) or ours (under TASKS_DIR)
TASK_FILES = {
    "medqa": "lm_eval:medqa/medqa.yaml",
    "medqa5": "sftmix:medqa5.yaml",
    "medmcqa": "lm_eval:medmcqa/medmcqa.yaml",
    "pubmedqa": "lm_eval:pubmedqa/pubmedqa.yaml",
}
INSTALL_HINT = 'pip install "sftmix[eval]"'


def require_lm_eval() -> None:
    """Raise, with the pip line, when lm-evaluation-harness is not installed."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise ImportError(
            "Benchmarks (medqa, medqa5, pubmedqa, medmcqa) are scored by lm-evaluation-harness, which is not "
            f"installed. Install it with `{INSTALL_HINT}`, or drop the benchmarks from the evaluation settings."
        )


def task_doc(benchmark: str, question) -> dict:
    """`question` as a row of the task's own dataset, plus `options` and `answer` for the option_text variant."""
    if benchmark in ("medqa", "medqa5"):  # GBaker/MedQA-USMLE-4-options-hf
        doc = {"sent1": question.question, "label": question.answer}
        doc.update({f"ending{i}": text for i, text in enumerate(question.options)})
    elif benchmark == "medmcqa":  # openlifescienceai/medmcqa (cop counts from 0)
        doc = {"question": question.question, "cop": question.answer}
        doc.update(dict(zip(("opa", "opb", "opc", "opd"), question.options, strict=True)))
    else:  # bigbio/pubmed_qa, source schema
        doc = {
            "QUESTION": question.question,
            "CONTEXTS": list(question.context),
            "final_decision": PUBMEDQA_OPTIONS[question.answer],
        }
    return {**doc, "id": question.id, "options": list(question.options), "answer": question.answer}


def task_config(benchmark: str, data_file: str | Path, style: str = "lm_eval") -> dict:
    """The lm-eval task config of `benchmark`, reading its questions from `data_file` (rows of `task_doc`)."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    origin, name = TASK_FILES[benchmark].split(":")
    directory = Path(lm_eval.tasks.__file__).parent if origin == "lm_eval" else TASKS_DIR
    config = load_yaml(directory / name, resolve_func=True)
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {"test": str(data_file)}},
        training_split=None,
        validation_split=None,
        test_split="test",
        num_fewshot=0,  # the paper's and lm-eval's zero-shot
    )
    if style == "option_text":
        config.update(
            task=f"{config['task']}_option_text",
            doc_to_choice="options",
            doc_to_target="answer",
            metric_list=[
                {"metric": metric, "aggregation": "mean", "higher_is_better": True} for metric in ("acc", "acc_norm")
            ],
        )
    return config


def score_benchmarks(lm, questions: dict, config) -> tuple[dict, dict]:
    """Score `questions` (benchmark -> questions) with lm-eval on `lm` (an HFLM); returns
    (benchmark -> {acc, acc_norm, questions, task}, benchmark -> per-question predictions)."""
    import tempfile

    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask

    tasks = {}
    with tempfile.TemporaryDirectory(prefix="sftmix-eval-") as work_dir:  # the questions, as the tasks' data files
        for benchmark, items in questions.items():
            path = Path(work_dir) / f"{benchmark}.jsonl"
            path.write_text("".join(json.dumps(task_doc(benchmark, q)) + "\n" for q in items))
            tasks[benchmark] = ConfigurableTask(config=task_config(benchmark, path, config.benchmark_style))
        output = simple_evaluate(
            model=lm,
            tasks=list(tasks.values()),
            apply_chat_template=config.benchmark_chat_template,
            system_instruction=config.system_prompt,
            log_samples=True,
            verbosity="WARNING",
        )
    if output is None:  # a process of lm-eval's own data-parallel run other than its first
        return {}, {}
    summaries, predictions = {}, {}
    for benchmark, task in tasks.items():
        task_name = task.config.task
        metrics = output["results"][task_name]
        samples = sorted(output["samples"][task_name], key=lambda s: s["doc_id"])
        summaries[benchmark] = {
            "acc": metrics["acc,none"],
            "acc_norm": metrics.get("acc_norm,none"),
            "questions": len(samples),
            "task": task_name,
        }
        predictions[benchmark] = [prediction(sample, task) for sample in samples]
    return summaries, predictions


def prediction(sample: dict, task) -> dict:
    """One question's row of predictions/<benchmark>.jsonl from lm-eval's logged sample (acc_norm as lm-eval
    computes it: the log-likelihood per character of the choice)."""
    lls = [float(ll) for ll, _ in sample["filtered_resps"]]
    choices = task.doc_to_choice(sample["doc"])
    norms = [ll / len(choice) for ll, choice in zip(lls, choices, strict=True)]
    return {
        "id": sample["doc"]["id"],
        "answer": sample["doc"]["answer"],
        "predicted": max(range(len(lls)), key=lambda i: (lls[i], -i)),
        "predicted_norm": max(range(len(norms)), key=lambda i: (norms[i], -i)),
        "sum_logprobs": lls,
        "choices": choices,
    }
