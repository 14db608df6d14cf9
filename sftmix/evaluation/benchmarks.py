"""Readers for the healthcare benchmarks (MedQA, MedQA-5, MedMCQA, PubMedQA) in their published formats and their
Hub copies' rows, into checked `MultipleChoiceQuestion`s; the formats read: docs/evaluation.md ("Benchmark files").
Error messages quote at most a short excerpt of a row (none with `error_excerpts: false`, sftmix.data).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sftmix.data import excerpt

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
# A benchmark source is a local file, `hub` (the dataset below) or `hub:ID[:CONFIG[:SPLIT]]`, in the published format.
# name -> (dataset id, configuration, split); MedQA-5 has none: no maintained Hub copy keeps the 5-option format.
HUB_DEFAULTS = {
    "medqa": ("GBaker/MedQA-USMLE-4-options-hf", None, "test"),  # what lm-eval's medqa_4options scores
    "medmcqa": ("openlifescienceai/medmcqa", None, "validation"),  # the test split has no answers
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", "train"),  # the 1,000 labelled questions
}

PUBMEDQA_OPTIONS = ("yes", "no", "maybe")
MEDMCQA_COLUMNS = ("opa", "opb", "opc", "opd")
FORMAT_HINTS = {
    "medqa": 'one JSON object per line like {"question": ..., "options": {"A": ..., "B": ..., ...}, '
    '"answer_idx": "C"} (the MedQA US release)',
    "medmcqa": 'rows like {"question": ..., "opa": ..., "opb": ..., "opc": ..., "opd": ..., "cop": 1} '
    "(the MedMCQA release, or openlifescienceai/medmcqa)",
    "pubmedqa": 'ori_pqal.json ({"PMID": {"QUESTION": ..., "CONTEXTS": [...], "final_decision": "yes"}}) or '
    'qiaojin/PubMedQA pqa_labeled rows ({"question": ..., "context": {"contexts": [...]}, "final_decision": ...})',
}


@dataclass
class MultipleChoiceQuestion:
    id: str
    question: str
    options: list[str]
    answer: int  # index of the correct option
    context: list[str] = field(default_factory=list)  # paragraphs shown before the question (PubMedQA)

    @property
    def letters(self) -> list[str]:
        return list(LETTERS[: len(self.options)])


class BenchmarkFormatError(ValueError):
    pass


def _question_text(row, key: str, at: str) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkFormatError(
            f"{at}: `{key}` is {'empty' if isinstance(value, str) else type(value).__name__}, not the question's "
            "text. Fix or drop that row."
        )
    return value


def read_records(path: str | Path):
    """A list of row dicts, or (a JSON file holding an object of objects, like ori_pqal.json) a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Benchmark file {path} does not exist. Fix the path.")
    if path.suffix == ".parquet":  # as Python lists and scalars, nested columns included
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path).to_dict("records")
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"Benchmark file {path}: unsupported extension; use .jsonl, .json, .parquet or .csv.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise BenchmarkFormatError(
            f"{path}, line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}). Re-save the file as UTF-8."
        ) from error
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # the MedMCQA release's .json files hold one object per line
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BenchmarkFormatError(
                    f"{path}, line {number}: not valid JSON ({error}). Expected one JSON object per line."
                ) from error
    return rows


def _rows(records, where: str, benchmark: str) -> list[dict]:
    if isinstance(records, dict):
        raise BenchmarkFormatError(
            f"{where} holds one JSON object (keys {list(records)[:5]}...), not rows; expected {FORMAT_HINTS[benchmark]}."
        )
    return list(records)


def _require(row, keys, where: str, benchmark: str) -> None:
    if not isinstance(row, dict):
        raise BenchmarkFormatError(
            f"{where} is {type(row).__name__}, not an object; expected {FORMAT_HINTS[benchmark]}."
        )
    missing = [k for k in keys if k not in row]
    if missing:
        raise BenchmarkFormatError(
            f"{where} has the columns {sorted(row)} but lacks {missing}; expected {FORMAT_HINTS[benchmark]}."
        )


def parse_medqa_rows(rows, where: str, num_options: int | None = None) -> list[MultipleChoiceQuestion]:
    questions = []
    for index, row in enumerate(rows):
        at = f"{where}, row {index}"
        # GBaker/MedQA-USMLE-4-options-hf rows (lm-eval's) -> the MedQA release's
        if isinstance(row, dict) and "sent1" in row and "ending0" in row:
            endings = sorted((k for k in row if k.startswith("ending")), key=lambda k: int(k[len("ending") :]))
            label = row.get("label")
            if not isinstance(label, int) or not 0 <= label < len(endings):
                raise BenchmarkFormatError(
                    f"{at}: `label` {label!r} is not the index of one of the {len(endings)} endings."
                )
            row = {
                "question": row["sent1"],
                "options": dict(zip(LETTERS[: len(endings)], (row[k] for k in endings), strict=True)),
                "answer_idx": LETTERS[label],
                "id": row.get("id", index),
            }
        _require(row, ("question", "options", "answer_idx"), at, "medqa")
        options = row["options"]
        if isinstance(options, list):  # BigBio style [{"key": "A", "value": ...}]
            options = {o["key"]: o["value"] for o in options}
        options = {k: v for k, v in sorted(options.items()) if v is not None}  # parquet fills absent E with None
        letters = list(options)
        if letters != list(LETTERS[: len(letters)]):
            raise BenchmarkFormatError(f"{at}: option keys {letters}; expected consecutive letters from A.")
        if num_options is not None and len(letters) != num_options:
            raise BenchmarkFormatError(
                f"{at} has {len(letters)} options ({', '.join(letters)}) but this benchmark expects {num_options}. "
                "Pass the 4-option file (US/4_options/...) as `medqa` and the 5-option file (US/test.jsonl) as "
                "`medqa5`."
            )
        if row["answer_idx"] not in options:
            raise BenchmarkFormatError(f"{at}: answer_idx {row['answer_idx']!r} is not one of the options {letters}.")
        if row.get("answer") is not None and row["answer"].strip() != options[row["answer_idx"]].strip():
            raise BenchmarkFormatError(
                f"{at}: `answer` {excerpt(row['answer'])} is not the text of option {row['answer_idx']} "
                f"({excerpt(options[row['answer_idx']])}); the file is inconsistent."
            )
        questions.append(
            MultipleChoiceQuestion(
                id=str(row.get("id", index)),
                question=_question_text(row, "question", at),
                options=list(options.values()),
                answer=letters.index(row["answer_idx"]),
            )
        )
    return questions


def medmcqa_answer_base(rows, setting: str = "auto", default: int = 1) -> int:
    """0 or 1: what `cop` counts from (see the module docstring)."""
    if setting != "auto":
        return int(setting)
    values = {int(row["cop"]) for row in rows if row.get("cop") is not None}
    if 0 in values and 4 in values:
        raise BenchmarkFormatError(
            "MedMCQA `cop` takes both 0 and 4, so it is neither 0-3 nor 1-4; the file mixes formats."
        )
    if 0 in values:
        return 0
    if 4 in values:
        return 1
    logger.warning(
        "MedMCQA `cop` values %s fit both 0-3 and 1-4; reading them as %d-based. Set `medmcqa_answer_base` if wrong.",
        sorted(values),
        default,
    )
    return default


def parse_medmcqa_rows(
    rows, where: str, answer_base: str = "auto", default_base: int = 1
) -> list[MultipleChoiceQuestion]:
    for index, row in enumerate(rows):
        _require(row, ("question", *MEDMCQA_COLUMNS, "cop"), f"{where}, row {index}", "medmcqa")
        if row["cop"] is None or int(row["cop"]) < 0:
            raise BenchmarkFormatError(
                f"{where}, row {index} has no answer (cop = {row['cop']!r}): MedMCQA's test split has no public "
                "answers. Score the dev (validation) split instead."
            )
    base = medmcqa_answer_base(rows, answer_base, default_base)
    questions = []
    for index, row in enumerate(rows):
        answer = int(row["cop"]) - base
        if not 0 <= answer < 4:
            raise BenchmarkFormatError(
                f"{where}, row {index}: cop = {row['cop']} is outside {base}-{base + 3} (`medmcqa_answer_base`)."
            )
        questions.append(
            MultipleChoiceQuestion(
                id=str(row.get("id", index)),
                question=_question_text(row, "question", f"{where}, row {index}"),
                options=[str(row[c]) for c in MEDMCQA_COLUMNS],
                answer=answer,
            )
        )
    return questions


def _pubmedqa_question(qid, question, contexts, decision, at: str) -> MultipleChoiceQuestion:
    decision = str(decision).strip().lower()
    if decision not in PUBMEDQA_OPTIONS:
        raise BenchmarkFormatError(f"{at}: final_decision {decision!r} is not one of {list(PUBMEDQA_OPTIONS)}.")
    question = _question_text({"question": question}, "question", at)
    if isinstance(contexts, str):  # one paragraph
        contexts = [contexts]
    if not (isinstance(contexts, list) and all(isinstance(c, str) for c in contexts)):
        raise BenchmarkFormatError(
            f"{at}: the contexts are {type(contexts).__name__} ({excerpt(contexts)}), expected a list of paragraphs."
        )
    return MultipleChoiceQuestion(
        id=str(qid),
        question=question,
        options=list(PUBMEDQA_OPTIONS),
        answer=PUBMEDQA_OPTIONS.index(decision),
        context=contexts,
    )


def parse_pubmedqa_records(records, where: str, ids_wanted: bool = False) -> list[MultipleChoiceQuestion]:
    keyed = isinstance(records, dict)  # ori_pqal.json: PMID -> record
    questions = []
    for key, row in records.items() if keyed else enumerate(records):
        at = f"{where}, {'PMID' if keyed else 'row'} {key}"
        if keyed and not isinstance(row, dict):
            raise BenchmarkFormatError(
                f"{at} maps to {excerpt(row)}, not a question record; a file of PMID -> label (like "
                f"test_ground_truth.json) goes to `pubmedqa_ids`. Expected {FORMAT_HINTS['pubmedqa']}."
            )
        if keyed or (isinstance(row, dict) and "QUESTION" in row):  # ori_pqal, or BigBio pubmed_qa source rows
            _require(row, ("QUESTION", "CONTEXTS", "final_decision"), at, "pubmedqa")
            qid = key if keyed else row.get("PUBMED_ID", row.get("pubid"))
            if qid is None and ids_wanted:
                raise BenchmarkFormatError(
                    f"{at}: BigBio pubmed_qa rows carry no PMID, so `pubmedqa_ids` cannot select from them. Pass "
                    "ori_pqal.json (or qiaojin/PubMedQA pqa_labeled rows), whose questions are keyed by PMID, or "
                    "a file that holds only the questions to score and no `pubmedqa_ids`."
                )
            qid = key if qid is None else qid
            questions.append(_pubmedqa_question(qid, row["QUESTION"], row["CONTEXTS"], row["final_decision"], at))
            continue
        _require(row, ("question", "context", "final_decision"), at, "pubmedqa")
        context = row["context"]
        if isinstance(context, dict):
            context = context.get("contexts")
        if not isinstance(context, (list, str)):
            raise BenchmarkFormatError(
                f"{at}: `context` should hold {{'contexts': [paragraphs]}}, got {excerpt(row['context'])}."
            )
        questions.append(
            _pubmedqa_question(row.get("pubid", key), row["question"], context, row["final_decision"], at)
        )
    return questions


def read_pubmedqa_ids(path: str | Path) -> list[str]:
    """PMIDs from a JSON mapping (e.g. test_ground_truth.json: PMID -> answer) or list."""
    return [str(r) for r in read_records(path)]  # a mapping's keys, or a list's items


def read_medqa(path: str | Path, num_options: int | None = None) -> list[MultipleChoiceQuestion]:
    return parse_medqa_rows(_rows(read_records(path), str(path), "medqa"), str(path), num_options)


def read_medmcqa(path: str | Path, answer_base: str = "auto") -> list[MultipleChoiceQuestion]:
    return parse_medmcqa_rows(_rows(read_records(path), str(path), "medmcqa"), str(path), answer_base, default_base=1)


def read_pubmedqa(path: str | Path) -> list[MultipleChoiceQuestion]:
    return parse_pubmedqa_records(read_records(path), str(path))


NUM_OPTIONS = {"medqa": 4, "medqa5": 5}


def load_benchmark(
    name: str,
    source: str,
    *,
    max_examples: int | None = None,
    medmcqa_answer_base: str = "auto",
    pubmedqa_ids: str | None = None,
    pubmedqa_context: bool = True,
) -> list[MultipleChoiceQuestion]:
    """The questions of benchmark `name` (medqa, medqa5, medmcqa, pubmedqa) from a local file or the Hub."""
    if name not in ("medqa", "medqa5", "medmcqa", "pubmedqa"):
        raise ValueError(f"Unknown benchmark {name!r}; the benchmarks are medqa, medqa5, medmcqa and pubmedqa.")
    hub = is_hub_source(source) and not Path(source).is_file()
    where = f"{name} ({source})"
    records = load_hub_rows(name, source) if hub else read_records(source)
    if name in NUM_OPTIONS:
        questions = parse_medqa_rows(_rows(records, where, "medqa"), where, NUM_OPTIONS[name])
    elif name == "medmcqa":
        rows = _rows(records, where, "medmcqa")
        questions = parse_medmcqa_rows(rows, where, medmcqa_answer_base, default_base=0 if hub else 1)
    else:
        questions = parse_pubmedqa_records(records, where, ids_wanted=bool(pubmedqa_ids))
        if pubmedqa_ids:
            keep = set(read_pubmedqa_ids(pubmedqa_ids))
            missing = keep - {q.id for q in questions}
            if missing:
                raise BenchmarkFormatError(
                    f"{len(missing)} PMIDs of {pubmedqa_ids} are not in {source} (e.g. {sorted(missing)[:3]}); "
                    "pass ori_pqal.json, which holds all labelled questions."
                )
            questions = [q for q in questions if q.id in keep]
        if not pubmedqa_context:
            for question in questions:
                question.context = []
    if not questions:
        raise BenchmarkFormatError(f"{where} holds no questions.")
    return questions[:max_examples]


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
    return repo, config or None, split or HUB_DEFAULTS.get(name, (None, None, "test"))[2]


def load_hub_rows(name: str, source: str) -> list[dict]:
    import datasets

    repo, config, split = parse_hub_source(name, source)
    try:
        return datasets.load_dataset(repo, config, split=split).to_list()
    except Exception as error:  # offline, gated, renamed: say what to do instead
        from sftmix.checks import offline

        note = " with offline mode on" if offline("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") else ""
        raise RuntimeError(
            f"Could not load {name} from the Hugging Face Hub ({repo}"
            + (f", config {config}" if config else "")
            + f", split {split}){note}: {error}. Download it where the Hub is "
            f"reachable and pass the local file instead (`{name}: FILE` in a recipe, --{name} FILE on the command line)."
        ) from error
