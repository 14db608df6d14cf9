"""How a multiple-choice question becomes text to score, in two styles (`EvalConfig.benchmark_style`).

`lm_eval` (the default): lm-evaluation-harness's own prompts (v0.4, tasks `medqa_4options`, `medmcqa`, `pubmedqa`),
plain text, each choice scored as the continuation `" " + choice` after the prompt:

    medqa / medqa5:  "Question: <question>\nA. <option>\nB. <option>\n...Answer:"   choices A B C D (E)
    medmcqa:         "Question: <question>\nChoices:\nA. <opa>\n...D. <opd>\nAnswer:" choices A B C D
    pubmedqa:        "Abstract: <contexts joined by newlines>\nQuestion: <question>\nAnswer:"  yes no maybe

lm-eval has no 5-option MedQA task; `medqa5` follows `medqa_4options` with the fifth option as "E. ..." and the
choice E. The functions below are written on lm-eval's document schemas (GBaker/MedQA-USMLE-4-options-hf's
`sent1`/`ending0..3`, MedMCQA's `opa..opd`, BigBio PubMedQA's `QUESTION`/`CONTEXTS`) so that a test can compare
them with lm-eval's own `doc_to_text`.

`option_text`: sftmix's earlier scoring, a user turn with the question and lettered options, and one
assistant turn per option ("The answer is (C) Lisinopril"), each scored by its log-likelihood.

Every template is a setting (`EvalConfig.*_template`). The default user turn, for PubMedQA with its abstract:

    Context:
    <abstract paragraphs, one per line>

    Question: <question>

    Options:
    (A) yes
    (B) no
    (C) maybe

    Answer with the letter and the text of the correct option.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
BENCHMARK_STYLES = ("lm_eval", "option_text")
PUBMEDQA_CHOICES = ("yes", "no", "maybe")
LM_EVAL_TARGET_DELIMITER = " "  # lm-eval's default `target_delimiter`
DEFAULT_PROMPT_TEMPLATE = "{context}Question: {question}\n\nOptions:\n{options}\n\nAnswer with the letter and the text of the correct option."
DEFAULT_OPTION_TEMPLATE = "({letter}) {text}"
DEFAULT_CONTEXT_TEMPLATE = "Context:\n{context}\n\n"
DEFAULT_ANSWER_TEMPLATE = "The answer is ({letter}) {text}"

_FIELDS = {
    "prompt_template": ({"context", "question", "options"}, {"question", "options"}),
    "option_template": ({"letter", "text"}, set()),
    "context_template": ({"context"}, {"context"}),
    "answer_template": ({"letter", "text"}, set()),
}


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(setting: str, template: str) -> None:
    """Raise if `template` uses a field the setting does not provide or misses one it needs."""
    allowed, required = _FIELDS[setting]
    try:
        found = template_fields(template)
    except ValueError as error:
        raise ValueError(f"`{setting}` is not a valid format string ({error}): {template!r}.") from error
    unknown, missing = found - allowed, required - found
    if unknown or missing or (setting == "answer_template" and not found):
        raise ValueError(
            f"`{setting}` {template!r} uses the fields {sorted(found)}; it may use {sorted(allowed)}"
            + (f" and must use {sorted(required)}" if required else "")
            + (" and must use at least one of them" if setting == "answer_template" else "")
            + ". Write other braces as {{ and }}."
        )


@dataclass(frozen=True)
class MultipleChoiceTemplate:
    prompt: str = DEFAULT_PROMPT_TEMPLATE
    option: str = DEFAULT_OPTION_TEMPLATE
    context: str = DEFAULT_CONTEXT_TEMPLATE
    answer: str = DEFAULT_ANSWER_TEMPLATE
    system: str | None = None

    def __post_init__(self):
        check_template("prompt_template", self.prompt)
        check_template("option_template", self.option)
        check_template("context_template", self.context)
        check_template("answer_template", self.answer)

    def user_message(self, question) -> str:
        options = "\n".join(
            self.option.format(letter=letter, text=text)
            for letter, text in zip(question.letters, question.options, strict=True)
        )
        context = self.context.format(context="\n".join(question.context)) if question.context else ""
        return self.prompt.format(context=context, question=question.question, options=options)

    def answer_message(self, question, index: int) -> str:
        return self.answer.format(letter=question.letters[index], text=question.options[index])

    def conversation(self, question, index: int) -> list[dict]:
        """The chat whose last (assistant) turn is option `index`."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.user_message(question)})
        messages.append({"role": "assistant", "content": self.answer_message(question, index)})
        return messages


# lm-evaluation-harness prompts ------------------------------------------------------------------------------------
def medqa_doc(question) -> dict:
    """The question in GBaker/MedQA-USMLE-4-options-hf's schema (lm-eval's `medqa_4options` dataset)."""
    doc = {"sent1": question.question, "label": question.answer}
    doc.update({f"ending{i}": text for i, text in enumerate(question.options)})
    return doc


def medqa_doc_to_text(doc) -> str:
    """lm-eval's tasks/medqa/preprocess_medqa.py `doc_to_text`, extended to a fifth option (medqa5)."""
    letters = LETTERS[: sum(1 for key in doc if key.startswith("ending"))]
    answers = "".join(f"{k}. {doc[f'ending{i}']}\n" for i, k in enumerate(letters))
    return f"Question: {doc['sent1']}\n{answers}Answer:"


def medmcqa_doc(question) -> dict:
    doc = {"question": question.question, "cop": question.answer}
    doc.update(dict(zip(("opa", "opb", "opc", "opd"), question.options, strict=True)))
    return doc


def medmcqa_doc_to_text(doc) -> str:
    """lm-eval's tasks/medmcqa/utils_medmcqa.py `doc_to_text`."""
    prompt = "Question: " + doc["question"] + "\nChoices:\n"
    for letter, key in zip("ABCD", ("opa", "opb", "opc", "opd"), strict=True):
        prompt += f"{letter}. {doc[key]}\n"
    return prompt + "Answer:"


def pubmedqa_doc(question) -> dict:
    return {
        "QUESTION": question.question,
        "CONTEXTS": list(question.context),
        "final_decision": PUBMEDQA_CHOICES[question.answer],
    }


def pubmedqa_doc_to_text(doc) -> str:
    """lm-eval's tasks/pubmedqa/preprocess_pubmedqa.py `doc_to_text`."""
    ctxs = "\n".join(doc["CONTEXTS"])
    return f"Abstract: {ctxs}\nQuestion: {doc['QUESTION']}\nAnswer:"


def lm_eval_prompt(benchmark: str, question) -> tuple[str, list[str]]:
    """(prompt text, choices) of `question` as lm-eval's task for `benchmark` builds them."""
    if benchmark in ("medqa", "medqa5"):
        return medqa_doc_to_text(medqa_doc(question)), list(question.letters)
    if benchmark == "medmcqa":
        return medmcqa_doc_to_text(medmcqa_doc(question)), list(question.letters)
    if benchmark == "pubmedqa":
        return pubmedqa_doc_to_text(pubmedqa_doc(question)), list(PUBMEDQA_CHOICES)
    raise ValueError(
        f"No lm-eval prompt for benchmark {benchmark!r}; the benchmarks are medqa, medqa5, medmcqa, pubmedqa."
    )
