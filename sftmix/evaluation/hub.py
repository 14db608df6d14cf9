"""Benchmarks from the Hugging Face Hub, where it is reachable.

A benchmark source is a local file, `hub` (the default dataset below), or `hub:ID[:CONFIG[:SPLIT]]`
(e.g. `hub:openlifescienceai/medmcqa::validation`). Rows must be in the benchmark's published format
(sftmix.evaluation.benchmarks). MedQA-5 has no default: no maintained Hub copy keeps the 5-option format.
"""

from __future__ import annotations

import os

# name -> (dataset id, configuration, split)
HUB_DEFAULTS = {
    "medqa": ("GBaker/MedQA-USMLE-4-options", None, "test"),
    "medmcqa": ("openlifescienceai/medmcqa", None, "validation"),  # the test split has no answers
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", "train"),  # the 1,000 labelled questions
}


def is_hub_source(source) -> bool:
    return isinstance(source, str) and (source == "hub" or source.startswith("hub:"))


def parse_hub_source(name: str, source: str) -> tuple[str, str | None, str]:
    if source == "hub":
        if name not in HUB_DEFAULTS:
            raise ValueError(
                f"{name} has no default Hub dataset; pass a local file (the MedQA US release's US/test.jsonl) or "
                "'hub:ID[:CONFIG[:SPLIT]]' naming a dataset in the MedQA format."
            )
        return HUB_DEFAULTS[name]
    parts = source[len("hub:") :].split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"Hub source {source!r} is not of the form 'hub:ID[:CONFIG[:SPLIT]]'.")
    repo, config, split = (parts + [None, None])[:3]
    default_split = HUB_DEFAULTS.get(name, (None, None, "test"))[2]
    return repo, config or None, split or default_split


def load_hub_rows(name: str, source: str) -> list[dict]:
    import datasets

    repo, config, split = parse_hub_source(name, source)
    try:
        dataset = datasets.load_dataset(repo, config, split=split)
    except Exception as error:  # offline, gated, renamed: say what to do instead
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        raise RuntimeError(
            f"Could not load {name} from the Hugging Face Hub ({repo}"
            + (f", config {config}" if config else "")
            + f", split {split}){' with offline mode on' if offline else ''}: {error}. Download it where the Hub is "
            f"reachable and pass the local file instead (`{name}: FILE` in a recipe, --{name} FILE on the command line)."
        ) from error
    return dataset.to_list()
