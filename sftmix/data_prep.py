"""`sftmix data medalpaca|mcq`: the training and evaluation files of the healthcare recipes, in their published
formats, from the Hub datasets the paper used or from local copies (`--source NAME=PATH` or `--source DIR`).
Sources, defaults and the PubMedQA test split: docs/evaluation.md ("Data for the healthcare recipes")."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

MEDALPACA_SUBSETS = (
    "medical_meadow_medical_flashcards",
    "medical_meadow_wikidoc",
    "medical_meadow_wikidoc_patient_information",
    "medical_meadow_health_advice",
    "medical_meadow_pubmed_causal",
    "medical_meadow_medqa",
    "medical_meadow_mediqa",
    "medical_meadow_mmmlu",
)
MEDALPACA_FILE = "medical_meadow.jsonl"
BENCHMARK_FILES = {
    "medqa": "medqa/test.jsonl",
    "medqa5": "medqa/test_5options.jsonl",
    "pubmedqa": "pubmedqa/ori_pqal.json",
    "medmcqa": "medmcqa/dev.json",
}
PUBMEDQA_TEST_IDS = "pubmedqa/test_ground_truth.json"
EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


def parse_sources(values: list[str]) -> tuple[dict[str, Path], list[Path]]:
    """`NAME=PATH` pairs and directories from the `--source` flags."""
    named, directories = {}, []
    for value in values or []:
        if "=" in value:
            name, path = value.split("=", 1)
            named[name.removeprefix("medalpaca/")] = Path(path)
        elif Path(value).is_dir():
            directories.append(Path(value))
        else:
            raise ValueError(f"--source {value}: neither NAME=PATH nor a directory.")
    for name, path in named.items():
        if not path.is_file():
            raise ValueError(f"--source {name}={path}: {path} is not a file.")
    return named, directories


def local_source(name: str, named: dict[str, Path], directories: list[Path]) -> Path | None:
    candidates = (directory / f"{name}{extension}" for directory in directories for extension in EXTENSIONS)
    return named.get(name) or next((path for path in candidates if path.is_file()), None)


def _rows_from_file(path: Path) -> list[dict]:
    from sftmix.evaluation.benchmarks import read_records

    records = read_records(path)
    if isinstance(records, dict):
        raise ValueError(f"{path} holds one JSON object, not rows.")
    return list(records)


def _rows_from_hub(repo: str, split: str = "train") -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(repo, split=split).to_list()
    except Exception as error:  # offline, gated, renamed: say what to do instead
        raise ValueError(
            f"Could not load {repo} (split {split}) from the Hugging Face Hub: {error}. Download it where the Hub "
            f"is reachable and pass the file with --source {repo.split('/')[-1]}=PATH."
        ) from error


def build_medalpaca(out: Path, subsets, named, directories) -> tuple[Path, dict[str, int]]:
    """Concatenate the MedAlpaca subsets into `out/medical_meadow.jsonl` (instruction, input, output)."""
    counts, lines = {}, []
    for subset in subsets:
        subset = subset.removeprefix("medalpaca/")
        path = local_source(subset, named, directories)
        rows = _rows_from_file(path) if path else _rows_from_hub(f"medalpaca/{subset}")
        where = str(path) if path else f"medalpaca/{subset}"
        kept = 0
        for index, row in enumerate(rows):
            missing = [k for k in ("instruction", "output") if k not in row]
            if missing:
                raise ValueError(
                    f"{where}, row {index} has the columns {sorted(row)} but lacks {missing}; expected the "
                    "Medical Meadow format (instruction, input, output)."
                )
            if not str(row["output"] or "").strip():
                continue  # nothing to train on
            record = {
                "instruction": str(row["instruction"] or ""),
                "input": str(row.get("input") or ""),
                "output": str(row["output"]),
            }
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            kept += 1
        counts[subset] = kept
        logger.info("%s: %d examples (%d without an output left out)", where, kept, len(rows) - kept)
    target = out / MEDALPACA_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(lines), encoding="utf-8")
    return target, counts


def _write_benchmark(name: str, questions, target: Path) -> None:
    from sftmix.evaluation.benchmarks import LETTERS, PUBMEDQA_OPTIONS

    target.parent.mkdir(parents=True, exist_ok=True)
    if name == "pubmedqa":
        records = {
            q.id: {
                "QUESTION": q.question,
                "CONTEXTS": q.context,
                "final_decision": PUBMEDQA_OPTIONS[q.answer],
            }
            for q in questions
        }
        target.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return

    rows = []
    for q in questions:
        if name == "medmcqa":
            row = {"id": q.id, "question": q.question, "cop": q.answer + 1}  # the original release counts 1-4
            row.update(dict(zip(("opa", "opb", "opc", "opd"), q.options, strict=True)))
        else:
            letters = LETTERS[: len(q.options)]
            row = {
                "id": q.id,
                "question": q.question,
                "options": dict(zip(letters, q.options, strict=True)),
                "answer_idx": letters[q.answer],
                "answer": q.options[q.answer],
            }
        rows.append(json.dumps(row, ensure_ascii=False) + "\n")
    target.write_text("".join(rows), encoding="utf-8")


def build_benchmarks(out: Path, names, named, directories, medmcqa_answer_base: str = "auto") -> dict[str, Path]:
    """Write each benchmark in `names` to `out/<BENCHMARK_FILES[name]>`; medqa5 without a local source is skipped."""
    from sftmix.evaluation.benchmarks import load_benchmark

    written = {}
    for name in names:
        path = local_source(name, named, directories)
        if path is None and name == "medqa5":
            logger.warning(
                "medqa5 skipped: no Hub copy keeps MedQA's 5 options. Pass the MedQA release's "
                "data_clean/questions/US/test.jsonl with --source medqa5=PATH."
            )
            continue
        questions = load_benchmark(
            name, str(path) if path else "hub", medmcqa_answer_base=medmcqa_answer_base, pubmedqa_context=True
        )
        target = out / BENCHMARK_FILES[name]
        _write_benchmark(name, questions, target)
        written[name] = target
        logger.info("%s: %d questions -> %s", name, len(questions), target)
        ids = name == "pubmedqa" and write_pubmedqa_test_ids(
            questions, out / PUBMEDQA_TEST_IDS, local_source("pubmedqa_ids", named, directories)
        )
        if ids:
            written["pubmedqa_ids"] = ids
    return written


def write_pubmedqa_test_ids(questions, target: Path, release_file: Path | None) -> Path | None:
    """The official PubMedQA test split (PMID -> answer): the release's file if given, else drawn as the release's
    `preprocess/split_dataset.py` draws it (seed 0, each label's PMIDs shuffled in file order, the second half kept)."""
    import random

    from sftmix.evaluation.benchmarks import PUBMEDQA_OPTIONS, read_pubmedqa_ids

    answers = {q.id: PUBMEDQA_OPTIONS[q.answer] for q in questions}
    if release_file is not None:
        ids = read_pubmedqa_ids(release_file)
        missing = [i for i in ids if i not in answers]
        if missing:
            raise ValueError(
                f"{len(missing)} PMIDs of {release_file} are not among the PubMedQA questions (e.g. {missing[:3]})."
            )
    else:
        if len(answers) != 1000:
            logger.warning(
                "pubmedqa_ids not written: the PubMedQA source holds %d questions, not the 1,000 of ori_pqal.json, "
                "so the official test split cannot be drawn from it. Pass the release's test_ground_truth.json with "
                "--source pubmedqa_ids=PATH.",
                len(answers),
            )
            return None
        draw, ids = random.Random(0), []
        for label in PUBMEDQA_OPTIONS:
            pmids = [pmid for pmid, answer in answers.items() if answer == label]
            draw.shuffle(pmids)
            ids += pmids[math.ceil(len(pmids) / 2) :]
        logger.warning(
            "PubMedQA test split drawn as the release's split script draws it (%d PMIDs); pass the release's "
            "test_ground_truth.json with --source pubmedqa_ids=PATH to use the official file itself.",
            len(ids),
        )
    target.write_text(json.dumps({i: answers[i] for i in ids}, indent=1) + "\n", encoding="utf-8")
    logger.info("pubmedqa_ids: %d PMIDs (the official test split) -> %s", len(ids), target)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftmix data",
        description="Build the data files of the healthcare recipes: MedAlpaca training data and the MedQA, "
        "MedQA-5, PubMedQA and MedMCQA evaluation files, from the Hugging Face Hub or local copies.",
    )
    commands = parser.add_subparsers(dest="dataset", required=True)
    medalpaca = commands.add_parser("medalpaca", help="MedAlpaca (Medical Meadow) -> medical_meadow.jsonl")
    medalpaca.add_argument("--out", default="data/medalpaca", help="Output directory (default: data/medalpaca).")
    medalpaca.add_argument(
        "--subsets",
        default=",".join(MEDALPACA_SUBSETS),
        help="Comma-separated medalpaca/* dataset names (default: %(default)s).",
    )
    mcq = commands.add_parser("mcq", help="MedQA, MedQA-5, PubMedQA, MedMCQA in the formats sftmix eval reads")
    mcq.add_argument(
        "--out",
        default="data",
        help="Output directory (default: data); files go to its medqa/, "
        "pubmedqa/ and medmcqa/ subdirectories, as the recipes name them.",
    )
    mcq.add_argument(
        "--benchmarks",
        default="medqa,medqa5,pubmedqa,medmcqa",
        help="Comma-separated (default: %(default)s).",
    )
    mcq.add_argument(
        "--medmcqa_answer_base",
        default="auto",
        choices=["auto", "0", "1"],
        help="How a local MedMCQA file's `cop` counts (as `sftmix eval`'s setting).",
    )
    for sub in (medalpaca, mcq):
        sub.add_argument(
            "--source",
            action="append",
            default=[],
            help="NAME=PATH: read NAME from a local file instead of the Hub; or a directory of <NAME>.<ext> files.",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`sftmix data ...`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        named, directories = parse_sources(args.source)
        out = Path(args.out)
        if args.dataset == "medalpaca":
            subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
            target, counts = build_medalpaca(out, subsets, named, directories)
            print(f"{sum(counts.values())} examples from {len(counts)} subsets -> {target}")
        else:
            names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
            unknown = [n for n in names if n not in BENCHMARK_FILES]
            if unknown:
                raise ValueError(f"Unknown benchmark(s) {unknown}; choose from {list(BENCHMARK_FILES)}.")
            for name, target in build_benchmarks(out, names, named, directories, args.medmcqa_answer_base).items():
                print(f"{name}: {target}")
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"sftmix data: error: {error}", file=sys.stderr)
        return 2
    return 0
