"""How a multiple-choice question becomes a chat: a user turn with the question and lettered options, and one
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
