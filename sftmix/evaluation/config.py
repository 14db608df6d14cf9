"""`EvalConfig`: every evaluation setting in one dataclass (the `evaluation:` mapping of a recipe, the flags of
`sftmix eval`, the keyword arguments of `evaluate`), each with its help text."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The paper's table order (MedQA, MedQA-5, PubMedQA, MedMCQA) and the names its table uses.
BENCHMARKS = ("medqa", "medqa5", "pubmedqa", "medmcqa")
BENCHMARK_TITLES = {"medqa": "MedQA", "medqa5": "MedQA-5", "pubmedqa": "PubMedQA", "medmcqa": "MedMCQA"}
BENCHMARK_STYLES = ("lm_eval", "option_text")
HEADLINES = ("acc_norm", "acc")
DTYPES = ("auto", "bfloat16", "float16", "float32")
SOURCE_HELP = (
    "a local file in its published format, 'hub' for the default Hugging Face dataset, or 'hub:ID[:CONFIG[:SPLIT]]'"
)


@dataclass
class EvalConfig:
    heldout: str | None = field(
        default=None,
        metadata={
            "help": "Held-out SFT file (.json, .jsonl, .parquet, .csv; messages, prompt/completion, text, ShareGPT "
            "or Alpaca rows): NTP loss, perplexity, token accuracy and calibration (ECE) on its trainable tokens."
        },
    )
    heldout_split: bool = field(
        default=False,
        metadata={
            "help": "Recipes only: evaluate on the recipe's held-out split (`dataset_test_split` or `eval_fraction`)."
        },
    )
    heldout_format: str = field(
        default="auto",
        metadata={
            "help": "Format of the held-out file (as `dataset_format`).",
            "choices": ["auto", "messages", "prompt_completion", "text", "sharegpt", "alpaca"],
        },
    )
    medqa: str | None = field(
        default=None,
        metadata={"help": f"MedQA (USMLE, 4 options): {SOURCE_HELP}. Published file: US/4_options/*_test.jsonl."},
    )
    medqa5: str | None = field(
        default=None,
        metadata={"help": f"MedQA-5 (USMLE, 5 options): {SOURCE_HELP}. Published file: US/test.jsonl."},
    )
    pubmedqa: str | None = field(
        default=None,
        metadata={
            "help": f"PubMedQA (yes/no/maybe): {SOURCE_HELP}. Published files: ori_pqal.json (all 1,000 labelled "
            "questions) or a split of it in the same format; HF qiaojin/PubMedQA pqa_labeled rows."
        },
    )
    pubmedqa_ids: str | None = field(
        default=None,
        metadata={
            "help": "Keep only the PubMedQA questions whose PMIDs are the keys (or items) of this JSON file, e.g. "
            "the official test_ground_truth.json (500 questions), to score the test split of ori_pqal.json."
        },
    )
    medmcqa: str | None = field(
        default=None,
        metadata={
            "help": f"MedMCQA (4 options): {SOURCE_HELP}. Published file: dev.json (the test set has no answers)."
        },
    )
    medmcqa_answer_base: str = field(
        default="auto",
        metadata={
            "help": "How MedMCQA's `cop` counts: '1' (original release, 1-4), '0' (HF openlifescienceai/medmcqa, "
            "0-3) or 'auto': 0-based if some cop is 0, 1-based if some cop is 4, else 1 for local files and 0 "
            "for the Hub.",
            "choices": ["auto", "0", "1"],
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where results.json, results.md, the reliability diagram and predictions go "
            "(default: <model>/eval)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass."})
    max_examples: int | None = field(
        default=None,
        metadata={"help": "Evaluate only the first N held-out examples and the first N questions of each benchmark."},
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Held-out sequence length. Unset: the training run's, from the model directory's "
            "sftmix_label_settings.json (else SFTConfig's default, 1024). Truncation and masking follow that file."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Dtype to load the model in ('auto': the checkpoint's).", "choices": list(DTYPES)},
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={
            "help": "Jinja chat template to use instead of the saved one (the training template is saved with the "
            "model in sftmix_label_settings.json; set this for models trained elsewhere)."
        },
    )
    benchmark_style: str = field(
        default="lm_eval",
        metadata={
            "help": "Which lm-evaluation-harness tasks score the benchmarks. 'lm_eval': lm-eval's own medqa_4options, "
            "medmcqa and pubmedqa (letters, or yes/no/maybe, as the choices; medqa5 adds option E to medqa_4options). "
            "'option_text': the same prompts with the options' texts as the choices (the cloze form), which says "
            "more about a small model than letters do.",
            "choices": list(BENCHMARK_STYLES),
        },
    )
    benchmark_chat_template: bool = field(
        default=False,
        metadata={
            "help": "Put each prompt through the chat template as a user turn (lm-eval's --apply_chat_template); "
            "off, as lm-eval's default, the prompt is plain text."
        },
    )
    headline: str | None = field(
        default=None,
        metadata={
            "help": "Benchmark accuracy reported as the headline: 'acc' (highest summed log-likelihood) or "
            "'acc_norm' (highest log-likelihood per character of the choice, lm-eval's). Unset: 'acc' for lm_eval "
            "(lm-eval's pubmedqa reports acc only; on letter choices the two agree), 'acc_norm' for option_text.",
            "choices": list(HEADLINES),
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message before every benchmark prompt (lm-eval's --system_instruction)."},
    )
    pubmedqa_context: bool = field(
        default=True,
        metadata={"help": "Show PubMedQA's abstract (without its conclusion) before the question."},
    )
    num_bins: int = field(default=15, metadata={"help": "Equal-width confidence bins of the ECE."})
    chunk_size: int = field(
        default=512,
        metadata={"help": "Token positions projected through the LM head at once (bounds the logits' memory)."},
    )
    show_progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars."})

    def __post_init__(self):
        for name in ("batch_size", "num_bins", "chunk_size", "max_examples", "max_length"):
            value, optional = getattr(self, name), name.startswith("max_")
            if not (optional and value is None) and value < 1:
                raise ValueError(f"`{name}` must be at least 1{' or unset' if optional else ''}, got {value}.")
        if self.headline is None:
            self.headline = "acc" if self.benchmark_style == "lm_eval" else "acc_norm"
        for name in ("benchmark_style", "headline", "dtype", "medmcqa_answer_base"):
            allowed = self.__dataclass_fields__[name].metadata["choices"]
            value = str(getattr(self, name))
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {getattr(self, name)!r}.")
            setattr(self, name, value)

    def benchmark_sources(self) -> dict[str, str]:
        """The benchmarks asked for, in the paper's order: name -> file path or Hub source."""
        return {name: getattr(self, name) for name in BENCHMARKS if getattr(self, name)}

    def target_problem(self, held_out: bool | None = None, prefix: str = "") -> str | None:
        """What leaves nothing to evaluate, or asks for a held-out split there is not; None when neither.

        held_out: whether the recipe's data have a held-out split (None: no recipe, as for `sftmix eval`). prefix: how
        settings are named in the messages: "" (`heldout`), "evaluation." (a recipe's keys) or "--" (the flags).
        """

        def name(setting: str) -> str:
            return f"--{setting}" if prefix == "--" else f"`{prefix}{setting}`"

        heldout, split = name("heldout"), name("heldout_split")
        if self.heldout_split and held_out is None:
            return f"{split} takes a recipe's held-out split; outside a recipe pass {heldout} (a file)."
        if self.heldout and self.heldout_split:
            return f"Set either {heldout} (a file) or {split} (the recipe's held-out split), not both."
        if self.heldout_split and not held_out:
            return (
                f"`{prefix}heldout_split: true` but the recipe has no held-out split: set `dataset_test_split` or "
                f"`eval_fraction` (e.g. 0.01), or name a held-out file as {heldout}."
            )
        if not (self.heldout or self.heldout_split or self.benchmark_sources()):
            in_recipe = "" if prefix == "--" else f", `{prefix}heldout_split: true` (in a recipe),"
            benchmarks = ", ".join(name(benchmark) for benchmark in BENCHMARKS)
            return (
                f"Nothing to evaluate: set {heldout} (a held-out SFT file){in_recipe} or a benchmark ({benchmarks})."
            )
        return None

    def check_sources(self) -> None:
        """Cheap checks before any model loads: every local file named exists."""
        from sftmix.evaluation.benchmarks import is_hub_source

        named = {name: getattr(self, name) for name in ("heldout", "pubmedqa_ids", "chat_template_path")}
        for name, source in (named | self.benchmark_sources()).items():
            if source is None or (name in BENCHMARKS and is_hub_source(source)):
                continue
            if not Path(source).is_file():
                hub = ", or pass 'hub' to load the benchmark from the Hugging Face Hub"
                raise FileNotFoundError(
                    f"`{name}` names {source}, which is not a file. Fix the path{hub if name in BENCHMARKS else ''}."
                )
