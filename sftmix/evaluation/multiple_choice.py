"""Score multiple-choice questions by the log-likelihood of each option's answer turn.

For each option the chat (user turn + assistant turn "The answer is (X) <text>", sftmix.evaluation.prompts) is
tokenised with the chat template, the assistant turn left open (`continue_final_message=True`, so end-of-turn
tokens are not scored). The tokens all options share form the context; the rest of each option's tokens are
its continuation, scored under the model. Two predictions per question:
- `acc`: the option with the largest summed log-likelihood of its continuation;
- `acc_norm` (the default headline): the largest mean log-likelihood per continuation token, which does not
  favour short options. Ties go to the earlier option.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftmix.evaluation.encoding import common_prefix_length, require_chat_template
from sftmix.evaluation.prompts import MultipleChoiceTemplate
from sftmix.evaluation.token_scores import (
    IGNORE_INDEX,
    check_head,
    model_device,
    pad_batch,
    score_label_tokens,
)


@dataclass
class QuestionResult:
    id: str
    answer: int
    sum_logprobs: list[float]
    token_counts: list[int]

    @property
    def mean_logprobs(self) -> list[float]:
        return [s / n for s, n in zip(self.sum_logprobs, self.token_counts, strict=True)]

    @property
    def predicted(self) -> int:
        return max(range(len(self.sum_logprobs)), key=lambda i: (self.sum_logprobs[i], -i))

    @property
    def predicted_norm(self) -> int:
        means = self.mean_logprobs
        return max(range(len(means)), key=lambda i: (means[i], -i))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "answer": self.answer,
            "predicted": self.predicted,
            "predicted_norm": self.predicted_norm,
            "sum_logprobs": self.sum_logprobs,
            "token_counts": self.token_counts,
        }


def encode_options(question, tokenizer, template: MultipleChoiceTemplate) -> tuple[list[list[int]], int]:
    """Token ids of each option's chat, and the length of the prefix they all share (the context)."""
    sequences = [
        list(
            tokenizer.apply_chat_template(
                template.conversation(question, i),
                tokenize=True,
                return_dict=True,
                continue_final_message=True,
            )["input_ids"]
        )
        for i in range(len(question.options))
    ]
    shared = min(common_prefix_length(sequences[0], other) for other in sequences[1:])
    if any(len(s) == shared for s in sequences):
        raise ValueError(
            f"Question {question.id}: an option's answer adds no token after the part all options share "
            f"(answer_template {template.answer!r}); the template must show the option's letter or text."
        )
    return sequences, shared


def score_questions(
    model,
    tokenizer,
    questions,
    template: MultipleChoiceTemplate | None = None,
    *,
    batch_size: int = 8,
    chunk_size: int = 512,
    show_progress: bool = True,
    desc: str = "Scoring options",
) -> list[QuestionResult]:
    import torch
    from tqdm.auto import tqdm

    template = template or MultipleChoiceTemplate()
    if not questions:
        raise ValueError("No questions to score.")
    require_chat_template(tokenizer, "Benchmark scoring")
    items = []  # (question index, option index, input ids, labels)
    tokenising = tqdm(questions, desc=f"{desc}: tokenising", unit="question", disable=not show_progress)
    for q, question in enumerate(tokenising):
        sequences, shared = encode_options(question, tokenizer, template)
        for o, ids in enumerate(sequences):
            items.append((q, o, ids, [IGNORE_INDEX] * shared + ids[shared:]))
    items.sort(key=lambda item: -len(item[2]))  # less padding per batch
    sums = [[0.0] * len(q.options) for q in questions]
    counts = [[0] * len(q.options) for q in questions]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        check_head(model, torch.tensor([items[0][2]], device=device))
        for start in tqdm(
            range(0, len(items), batch_size), desc=desc, unit="batch", disable=not show_progress
        ):
            chunk = items[start : start + batch_size]
            batch = pad_batch([c[2] for c in chunk], [c[3] for c in chunk], pad_id, device)
            row_sums, row_counts = score_label_tokens(model, **batch, chunk_size=chunk_size).per_row(
                len(chunk)
            )
            for (q, o, _, _), total, count in zip(chunk, row_sums.tolist(), row_counts.tolist(), strict=True):
                sums[q][o], counts[q][o] = total, count
    finally:
        model.train(was_training)
    return [
        QuestionResult(id=question.id, answer=question.answer, sum_logprobs=sums[q], token_counts=counts[q])
        for q, question in enumerate(questions)
    ]


def accuracy_summary(results: list[QuestionResult]) -> dict:
    n = len(results)
    return {
        "acc": sum(r.predicted == r.answer for r in results) / n,
        "acc_norm": sum(r.predicted_norm == r.answer for r in results) / n,
        "questions": n,
    }
