"""`sftmix eval`: the flags are the fields of `EvalConfig` (both --max_examples and --max-examples work) plus
--model; for example

    sftmix eval --model outputs/llama-3.1-8b-medalpaca-sftmix --medqa data/medqa/test.jsonl \\
        --medqa5 data/medqa/test_5options.jsonl --pubmedqa data/pubmedqa/ori_pqal.json \\
        --medmcqa data/medmcqa/dev.json --heldout data/heldout.jsonl --output-dir outputs/eval
"""

from __future__ import annotations

from sftmix.evaluation.config import EvalConfig


def run_eval_cli(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        EvalConfig,
        prog="sftmix eval",
        description="Evaluate a trained model: held-out NTP loss, perplexity, token accuracy and calibration (ECE "
        "with a reliability diagram), and the healthcare multiple-choice benchmarks of the SFTMix paper (MedQA, "
        "MedQA-5, PubMedQA, MedMCQA), each option scored by its log-likelihood. Writes results.json and results.md.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="Directory of the trained model (config.json + weights + tokenizer) or of a PEFT adapter.",
    )
    values = vars(parser.parse_args(argv))
    model = values.pop("model")
    try:
        config = EvalConfig(**values)  # the other flags are EvalConfig's fields
        if problem := config.target_problem(prefix="--"):
            raise ValueError(problem)
        config.check_sources()
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    from sftmix.evaluation.runner import evaluate_from_config

    results = evaluate_from_config(model, config)
    if results is not None:
        from sftmix.evaluation.report import markdown_report

        print(markdown_report(results))
        print(f"Results written to {results['files']['json']} and {results['files']['markdown']}")
    return results
