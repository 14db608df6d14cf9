"""`evaluate`: held-out NTP metrics and healthcare benchmarks of a model in memory, written as a report;
`evaluate_from_config`: the same for a model directory, as recipes and `sftmix eval` call it."""

from __future__ import annotations

import logging
import os
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
) -> dict:
    """Evaluate `model` and return the results (also written to `output_dir` when given).

    heldout: a held-out file path, a `datasets.Dataset` or a list of rows in an SFT format, or None.
    benchmarks: benchmark name (medqa, medqa5, pubmedqa, medmcqa) -> local file or Hub source ('hub', 'hub:ID').
    batch_size, max_examples: override the `config` values when given; every other setting comes from `config`.
    label_settings: how training labelled its data (sftmix.evaluation.label_settings; default: SFTConfig's
    defaults with response-only loss on conversations, and `config.max_length` when set).
    shard: this process's share of the work under a multi-process launch (sftmix.evaluation.sharding); every
    process returns the same results, and only the main one writes the report.
    """
    from sftmix.evaluation.benchmarks import load_benchmark
    from sftmix.evaluation.heldout import heldout_metrics, load_heldout
    from sftmix.evaluation.label_settings import resolve_label_settings
    from sftmix.evaluation.multiple_choice import accuracy_summary, score_questions
    from sftmix.evaluation.sharding import Shard

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
    files = {}
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
        logger.info(
            "Held-out: loss %.4f, perplexity %.3f, ECE %.4f", metrics.loss, metrics.perplexity, metrics.ece
        )
    predictions = {}
    if questions:
        template = config.template()
        results["benchmarks"] = {}
        results["benchmark_style"] = config.benchmark_style
        for name, items in questions.items():
            scored = score_questions(
                model,
                tokenizer,
                items,
                template,
                style=config.benchmark_style,
                benchmark=name,
                chat_template=config.benchmark_chat_template,
                batch_size=batch_size,
                chunk_size=config.chunk_size,
                show_progress=config.show_progress,
                desc=f"Scoring {name}",
                shard=shard,
            )
            summary = accuracy_summary(scored)
            summary["accuracy"] = summary[config.headline]
            summary["source"] = str(benchmarks[name])
            results["benchmarks"][name] = summary
            predictions[name] = [r.to_dict() for r in scored]
            logger.info(
                "%s: accuracy %.4f over %d questions", name, summary["accuracy"], summary["questions"]
            )
        accuracies = [b["accuracy"] for b in results["benchmarks"].values()]
        results["average_accuracy"] = sum(accuracies) / len(accuracies)
    if output_dir is not None and shard.is_main:
        if reliability is not None:
            from sftmix.evaluation.reliability_plot import plot_reliability_diagram

            path = plot_reliability_diagram(
                reliability,
                Path(output_dir) / "reliability.png",
                title=f"Held-out tokens, {results['model_name']}",
            )
            files["reliability_diagram"] = str(path)
        from sftmix.evaluation.report import write_report

        results["files"] = files
        write_report(results, output_dir, predictions)
    return results


def evaluate_from_config(model_path: str, config: EvalConfig, data_args=None) -> dict | None:
    """Load the model at `model_path` and evaluate it as `config` says; the report goes to
    `config.output_dir` (default: <model_path>/eval).

    Held-out data is labelled as training labelled it, from the model directory's `sftmix_label_settings.json`.
    `config.heldout_split` takes the held-out split of the recipe's data (`data_args`, sftmix.data). Under a
    multi-process launch every process loads the model on its own device and scores its share of the batches;
    the main process returns the results (the same as one process's) and writes the report, the others return None.
    """
    config.check_sources()
    if config.heldout and config.heldout_split:
        raise ValueError(
            "Set either `heldout` (a file) or `heldout_split` (the recipe's held-out split), not both."
        )
    if not (config.heldout or config.heldout_split or config.benchmark_sources()):
        raise ValueError(
            "Nothing to evaluate: set `heldout` (a held-out SFT file), `heldout_split: true` (in a recipe), or a "
            "benchmark (medqa, medqa5, pubmedqa, medmcqa)."
        )
    heldout = config.heldout
    if config.heldout_split:
        if data_args is None:
            raise ValueError(
                "`heldout_split` needs the recipe's data settings; outside a recipe pass `heldout` (a file)."
            )
        from sftmix.data import load_sft_data

        _, heldout = load_sft_data(data_args)
        if heldout is None:
            raise ValueError(
                "`heldout_split: true` but the recipe has no held-out split: set `dataset_test_split` or "
                "`eval_fraction` (e.g. 0.01)."
            )
    import torch

    from sftmix.evaluation.label_settings import resolve_label_settings
    from sftmix.evaluation.loading import load_model_for_eval
    from sftmix.evaluation.sharding import current_shard

    shard = current_shard()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_for_eval(model_path, config.dtype, device, config.chat_template_path)
    output_dir = config.output_dir or str(Path(model_path) / "eval")
    results = evaluate(
        model,
        tokenizer,
        heldout=heldout,
        benchmarks=config.benchmark_sources(),
        output_dir=output_dir,
        config=config,
        model_name=str(model_path),
        label_settings=resolve_label_settings(model_path, config),
        shard=shard,
    )
    return results if shard.is_main else None
