"""Score multiple-choice questions by the log-likelihood of each choice after the question.

Two styles (`EvalConfig.benchmark_style`, sftmix.evaluation.prompts):
- `lm_eval` (default), as lm-evaluation-harness's `loglikelihood` requests: the context is the task's plain-text
  prompt (or, with `chat_template=True`, that prompt as a user turn through the chat template with the generation
  prompt, and no target delimiter, as lm-eval's `--apply_chat_template`), the continuation `" " + choice`.
  Tokenised as lm-eval's HFLM does: trailing spaces of the context move to the continuation, the continuation's
  tokens are those of `encode(context + continuation)` after `len(encode(context))`, special tokens added by the
  tokenizer's default unless the text starts with its BOS; sequences longer than the model's context keep their
  end. `acc`: the highest summed log-likelihood; `acc_norm`: the highest log-likelihood per character of the
  choice (lm-eval's `acc_norm`).
- `option_text`: for each option the chat (user turn + assistant turn "The answer is (X) <text>") is tokenised
  with the chat template, the assistant turn left open (`continue_final_message=True`, so end-of-turn tokens are
  not scored). The tokens all options share form the context; the rest are the continuation. `acc`: the highest
  summed log-likelihood; `acc_norm`: the highest mean log-likelihood per continuation token.
Ties go to the earlier choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from sftmix._trl_compat import common_prefix_length
from sftmix.evaluation.encoding import require_chat_template
from sftmix.evaluation.prompts import LM_EVAL_TARGET_DELIMITER, MultipleChoiceTemplate, lm_eval_prompt
from sftmix.evaluation.sharding import Shard
from sftmix.evaluation.token_scores import (
    IGNORE_INDEX,
    check_head,
    model_device,
    pad_batch,
    score_label_tokens,
)

LM_EVAL_DEFAULT_MAX_LENGTH = 2048  # HFLM's _DEFAULT_MAX_LENGTH
_TOKENIZER_INFINITY = 1000000000000000019884624838656


@dataclass
class QuestionResult:
    id: str
    answer: int
    sum_logprobs: list[float]
    token_counts: list[int]
    norms: list[float] | None = (
        None  # acc_norm's divisor per choice (characters for lm_eval; default: tokens)
    )

    @property
    def mean_logprobs(self) -> list[float]:
        return [s / n for s, n in zip(self.sum_logprobs, self.token_counts, strict=True)]

    @property
    def normalized_logprobs(self) -> list[float]:
        norms = self.norms if self.norms is not None else self.token_counts
        return [s / n for s, n in zip(self.sum_logprobs, norms, strict=True)]

    @property
    def predicted(self) -> int:
        return max(range(len(self.sum_logprobs)), key=lambda i: (self.sum_logprobs[i], -i))

    @property
    def predicted_norm(self) -> int:
        values = self.normalized_logprobs
        return max(range(len(values)), key=lambda i: (values[i], -i))

    def to_dict(self) -> dict:
        row = {
            "id": self.id,
            "answer": self.answer,
            "predicted": self.predicted,
            "predicted_norm": self.predicted_norm,
            "sum_logprobs": self.sum_logprobs,
            "token_counts": self.token_counts,
        }
        if self.norms is not None:
            row["choice_lengths"] = self.norms
        return row


def lm_eval_max_length(model, tokenizer) -> int:
    """The context length lm-eval's HFLM assumes (`resolve_max_length`): the config's, else the tokenizer's, else 2048."""
    config = model.config
    configs = [getattr(config, "text_config", None), config]
    for source in configs:
        for name in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(source, name, None) if source is not None else None
            if value:
                return int(value)
    length = getattr(tokenizer, "model_max_length", None)
    if length and length != _TOKENIZER_INFINITY:
        return int(length)
    return LM_EVAL_DEFAULT_MAX_LENGTH


def _lm_eval_encode(tokenizer, text: str) -> list[int]:
    """HFLM.tok_encode: the tokenizer's default special tokens, none if the text already starts with its BOS."""
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = tokenizer.decode(prefix_id) if prefix_id is not None else None
    if prefix and text.startswith(prefix):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def lm_eval_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-eval's `_encode_pair` makes them (causal models)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = _lm_eval_encode(tokenizer, context + continuation)
    context_ids = _lm_eval_encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


def lm_eval_requests(
    benchmark: str, question, tokenizer, chat_template: bool = False, system_prompt: str | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """lm-eval's (context, continuation) pairs for `question`, and its choices."""
    prompt, choices = lm_eval_prompt(benchmark, question)
    delimiter = LM_EVAL_TARGET_DELIMITER
    if chat_template:
        require_chat_template(tokenizer, "Benchmark scoring with `benchmark_chat_template`")
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        delimiter = ""
    return [(prompt, delimiter + choice) for choice in choices], choices


def encode_lm_eval(
    benchmark: str, question, tokenizer, max_length: int, chat_template: bool = False, system_prompt=None
) -> tuple[list[list[int]], list[int], list[float]]:
    """Per choice: scored sequence (left-truncated to max_length + 1 tokens), continuation length, characters."""
    pairs, choices = lm_eval_requests(benchmark, question, tokenizer, chat_template, system_prompt)
    sequences, lengths = [], []
    for context, continuation in pairs:
        context_ids, continuation_ids = lm_eval_pair(tokenizer, context, continuation)
        if not continuation_ids:
            raise ValueError(f"Question {question.id}: the choice {continuation!r} tokenises to nothing.")
        sequences.append((context_ids + continuation_ids)[-(max_length + 1) :])
        lengths.append(len(continuation_ids))
    return sequences, lengths, [float(len(choice)) for choice in choices]


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
    style: str = "lm_eval",
    benchmark: str | None = None,
    chat_template: bool = False,
    batch_size: int = 8,
    chunk_size: int = 512,
    show_progress: bool = True,
    desc: str = "Scoring options",
    shard: Shard | None = None,
) -> list[QuestionResult]:
    """Per-choice log-likelihoods of `questions` (of `benchmark`, for the lm_eval style) and the predictions."""
    import torch
    from tqdm.auto import tqdm

    shard = shard or Shard()
    template = template or MultipleChoiceTemplate()
    if not questions:
        raise ValueError("No questions to score.")
    if style not in ("lm_eval", "option_text"):
        raise ValueError(f"`benchmark_style` must be 'lm_eval' or 'option_text', got {style!r}.")
    if style == "lm_eval" and benchmark is None:
        raise ValueError("The lm_eval style needs the benchmark's name (medqa, medqa5, medmcqa, pubmedqa).")
    if style == "option_text":
        require_chat_template(tokenizer, "Benchmark scoring (benchmark_style: option_text)")
    max_length = lm_eval_max_length(model, tokenizer)
    items = []  # (question index, choice index, input ids, labels)
    norms = [None] * len(questions)
    tokenising = tqdm(questions, desc=f"{desc}: tokenising", unit="question", disable=not show_progress)
    for q, question in enumerate(tokenising):
        if style == "lm_eval":
            sequences, lengths, norms[q] = encode_lm_eval(
                benchmark, question, tokenizer, max_length, chat_template, template.system
            )
            for o, (ids, n) in enumerate(zip(sequences, lengths, strict=True)):
                items.append((q, o, ids, [IGNORE_INDEX] * (len(ids) - n) + ids[len(ids) - n :]))
        else:
            sequences, shared = encode_options(question, tokenizer, template)
            for o, ids in enumerate(sequences):
                items.append((q, o, ids, [IGNORE_INDEX] * shared + ids[shared:]))
    items.sort(key=lambda item: -len(item[2]))  # less padding per batch
    batches = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    was_training = model.training
    model.eval()
    mine = []  # (question, choice, summed log-likelihood, tokens)
    try:
        check_head(model, torch.tensor([items[0][2]], device=device))
        indices = shard.batch_indices(len(batches))
        for b in tqdm(indices, desc=desc, unit="batch", disable=not show_progress):
            chunk = batches[b]
            batch = pad_batch([c[2] for c in chunk], [c[3] for c in chunk], pad_id, device)
            row_sums, row_counts = score_label_tokens(model, **batch, chunk_size=chunk_size).per_row(
                len(chunk)
            )
            for (q, o, _, _), total, count in zip(chunk, row_sums.tolist(), row_counts.tolist(), strict=True):
                mine.append((q, o, total, count))
    finally:
        model.train(was_training)
    sums = [[0.0] * len(q.options) for q in questions]
    counts = [[0] * len(q.options) for q in questions]
    for q, o, total, count in shard.gather(mine):
        sums[q][o], counts[q][o] = total, count
    return [
        QuestionResult(
            id=question.id,
            answer=question.answer,
            sum_logprobs=sums[q],
            token_counts=counts[q],
            norms=norms[q],
        )
        for q, question in enumerate(questions)
    ]


def accuracy_summary(results: list[QuestionResult]) -> dict:
    n = len(results)
    return {
        "acc": sum(r.predicted == r.answer for r in results) / n,
        "acc_norm": sum(r.predicted_norm == r.answer for r in results) / n,
        "questions": n,
    }
