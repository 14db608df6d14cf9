"""`evaluate`: held-out NTP metrics and healthcare benchmarks of a model in memory, written as a report;
`evaluate_from_config`: the same for a model directory, as recipes and `sftmix eval` call it."""

from __future__ import annotations

import logging
from pathlib import Path

from sftmix.evaluation.config import BENCHMARKS, EvalConfig

logger = logging.getLogger(__name__)


def evaluate(
    model,
    tokenizer,
    heldout=None,
    benchmarks: dict | None = None,
    output_dir: str | Path | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    config: EvalConfig | None = None,
    model_name: str | None = None,
    label_settings=None,
    shard=None,
    lm=None,
) -> dict:
    """Evaluate `model` and return the results (also written to `output_dir` when given).

    heldout: a held-out file path, a `datasets.Dataset` or a list of rows in an SFT format, or None.
    benchmarks: benchmark name (medqa, medqa5, pubmedqa, medmcqa) -> local file or Hub source ('hub', 'hub:ID').
    batch_size, max_examples: override the `config` values when given; every other setting comes from `config`.
    label_settings: how training labelled its data (sftmix.evaluation.label_settings; default: SFTConfig's
    defaults with response-only loss on conversations, and `config.max_length` when set).
    shard: this process's share of the work under a multi-process launch (sftmix.evaluation.heldout.Shard); every
    process returns the same results, and only the main one writes the report.
    lm: the lm-evaluation-harness model that scores the benchmarks (default: an HFLM around `model`).
    """
    from sftmix.evaluation.benchmarks import load_benchmark
    from sftmix.evaluation.heldout import Shard, heldout_metrics, load_heldout
    from sftmix.evaluation.label_settings import resolve_label_settings

    config = config or EvalConfig()
    shard = shard or Shard()
    if label_settings is None:
        label_settings = resolve_label_settings(None, config)
    batch_size = batch_size or config.batch_size
    max_examples = max_examples if max_examples is not None else config.max_examples
    benchmarks = dict(benchmarks or {})
    unknown = [name for name in benchmarks if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"Unknown benchmark(s) {unknown}; the benchmarks are {list(BENCHMARKS)}.")
    if benchmarks:
        from sftmix.evaluation.lm_eval_tasks import require_lm_eval

        require_lm_eval()
    # Read everything before the first forward pass, so that a bad file fails fast.
    if isinstance(heldout, (str, Path)):
        heldout = load_heldout(heldout, config.heldout_format)
    questions = {
        name: load_benchmark(
            name,
            str(benchmarks[name]),
            max_examples=max_examples,
            medmcqa_answer_base=config.medmcqa_answer_base,
            pubmedqa_ids=config.pubmedqa_ids,
            pubmedqa_context=config.pubmedqa_context,
        )
        for name in BENCHMARKS
        if name in benchmarks
    }
    results = {
        "model": model_name or getattr(model.config, "name_or_path", None) or type(model).__name__,
        "headline": config.headline,
    }
    results["model_name"] = Path(str(results["model"])).name or str(results["model"])
    results["processes"] = shard.world_size
    reliability = None
    if heldout is not None:
        metrics = heldout_metrics(
            model,
            tokenizer,
            heldout,
            label_settings=label_settings,
            batch_size=batch_size,
            max_examples=max_examples,
            num_bins=config.num_bins,
            chunk_size=config.chunk_size,
            dataset_format=config.heldout_format,
            show_progress=config.show_progress,
            shard=shard,
        )
        results["heldout"] = metrics.to_dict()
        reliability = metrics.reliability
        logger.info("Held-out: loss %.4f, perplexity %.3f, ECE %.4f", metrics.loss, metrics.perplexity, metrics.ece)
    predictions = {}
    if questions:
        from sftmix.evaluation.lm_eval_tasks import score_benchmarks

        if lm is None:
            from lm_eval.models.huggingface import HFLM

            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        summaries, predictions = score_benchmarks(lm, questions, config)
        results["benchmarks"] = {}
        results["benchmark_style"] = config.benchmark_style
        for name, summary in summaries.items():
            summary.update(accuracy=summary[config.headline], source=str(benchmarks[name]))
            results["benchmarks"][name] = summary
            logger.info(
                "%s: accuracy %.4f over %d questions (lm-eval task %s)",
                name,
                summary["accuracy"],
                summary["questions"],
                summary["task"],
            )
        accuracies = [summary["accuracy"] for summary in summaries.values()]
        if accuracies:  # none on the processes of lm-eval's data-parallel run other than its first
            results["average_accuracy"] = sum(accuracies) / len(accuracies)
    if output_dir is not None and shard.is_main:
        results["files"] = {}
        if reliability is not None:
            from sftmix.evaluation.reliability_plot import plot_reliability_diagram

            path = plot_reliability_diagram(
                reliability, Path(output_dir) / "reliability.png", title=f"Held-out tokens, {results['model_name']}"
            )
            results["files"]["reliability_diagram"] = str(path)
        from sftmix.evaluation.report import write_report

        write_report(results, output_dir, predictions)
    return results


def evaluate_from_config(model_path: str, config: EvalConfig, data_args=None) -> dict | None:
    """Load the model at `model_path` and evaluate it as `config` says (held-out data labelled as the model directory's
    `sftmix_label_settings.json` says; `config.heldout_split` takes the held-out split of the recipe's `data_args`);
    the report goes to `config.output_dir` (default: <model_path>/eval). Under a multi-process launch every process
    calls it and the main one returns the results (those of one process) and writes the report, the others None."""
    config.check_sources()
    heldout = config.heldout
    if config.heldout_split and not heldout and data_args is not None:
        from sftmix.checks import checked_data

        _, heldout = checked_data(data_args)
    if problem := config.target_problem(held_out=None if data_args is None else heldout is not None):
        raise ValueError(problem)
    from sftmix.evaluation.heldout import current_shard
    from sftmix.evaluation.label_settings import resolve_label_settings

    shard = current_shard()
    lm = load_lm(model_path, config)
    results = evaluate(
        lm.model,
        lm.tokenizer,
        heldout=heldout,
        benchmarks=config.benchmark_sources(),
        output_dir=config.output_dir or str(Path(model_path) / "eval"),
        config=config,
        model_name=str(model_path),
        label_settings=resolve_label_settings(model_path, config),
        shard=shard,
        lm=lm,
    )
    return results if shard.is_main else None


def load_lm(model_path: str, config: EvalConfig):
    """lm-eval's HFLM on the saved model (a full model, or a PEFT adapter with its base model), in eval mode; loaded
    from its path, so that under `accelerate launch` on GPUs lm-eval runs data-parallel."""
    import importlib.util
    import json

    import torch
    from transformers import AutoTokenizer

    from sftmix._trl_compat import without_zero3_init
    from sftmix.checks import missing_model_files
    from sftmix.modeling import resolve_model_path

    path = resolve_model_path(str(model_path))
    adapter = Path(path, "adapter_config.json")
    failure = (
        f"Could not load a model from {path}: {{}}. Pass a local directory holding a trained model (config.json "
        "and weights, as `sftmix train` saves to its output_dir) or a PEFT adapter directory (adapter_config.json)."
    )
    if Path(path).is_dir() and (missing := missing_model_files(Path(path))):
        raise RuntimeError(failure.format(f"it has no {', no '.join(missing)}"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = {"pretrained": path}
    tokenizer_path = path
    try:
        if adapter.is_file():
            base = json.loads(adapter.read_text())["base_model_name_or_path"]
            kwargs = {"pretrained": resolve_model_path(base), "peft": path}
            if not any(Path(path, f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
                logger.info("No tokenizer in adapter directory %s; using the base model's (%s)", path, base)
                tokenizer_path = kwargs["pretrained"]
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        if config.chat_template_path:
            tokenizer.chat_template = Path(config.chat_template_path).read_text()
        if importlib.util.find_spec("lm_eval") is None:
            # held-out metrics only (benchmarks are refused without lm_eval): the same model, loaded by transformers
            from types import SimpleNamespace

            from peft import AutoPeftModelForCausalLM
            from transformers import AutoModelForCausalLM

            loader = AutoPeftModelForCausalLM if adapter.is_file() else AutoModelForCausalLM
            dtype = config.dtype if config.dtype == "auto" else getattr(torch, config.dtype)
            with without_zero3_init():
                model = loader.from_pretrained(path, dtype=dtype)
            return SimpleNamespace(model=model.to(device).eval(), tokenizer=tokenizer)
        from lm_eval.models.huggingface import HFLM

        with without_zero3_init():
            lm = HFLM(**kwargs, tokenizer=tokenizer, dtype=config.dtype, batch_size=config.batch_size, device=device)
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(failure.format(error)) from error
    lm.model.eval()
    return lm
