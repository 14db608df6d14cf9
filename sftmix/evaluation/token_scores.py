"""Per-token scores of a causal LM at its labelled positions, without batch x sequence x vocabulary logits.

The backbone (`model.get_decoder()`) runs once; only the hidden states of positions whose next token has a label
(labels != -100, HF convention: `labels[t + 1]` is predicted at position t) go through the LM head
(`model.get_output_embeddings()`), `chunk_size` positions at a time, in float32 for the softmax. A PEFT model works
the same way: its decoder and head are the base model's modules with the adapters injected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class LabelTokenScores:
    row: torch.Tensor  # (N,) batch row of each scored token
    logprob: torch.Tensor  # (N,) log p(label | prefix)
    confidence: torch.Tensor  # (N,) largest next-token probability
    correct: torch.Tensor  # (N,) bool: argmax == label

    def per_row(self, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of log-probabilities, number of scored tokens) of each batch row."""
        sums = torch.zeros(num_rows, dtype=torch.float64).index_add_(0, self.row, self.logprob.double())
        return sums, torch.bincount(self.row, minlength=num_rows)


def decoder_and_head(model):
    """The backbone returning last hidden states, and the LM head projecting them to the vocabulary."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        raise TypeError(
            f"Cannot split {type(model).__name__} into a backbone and an LM head (`get_decoder()` / "
            "`get_output_embeddings()`); evaluation needs a causal LM such as AutoModelForCausalLM returns."
        )
    return decoder, head


def _logit_transform(model):
    """Final-logit scaling and soft-capping that some heads apply after the projection (Cohere, Granite, Gemma 2+).

    `check_head` verifies the result against the model's own forward, so an architecture with another
    transformation fails loudly instead of scoring wrongly.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    scale = getattr(config, "logit_scale", None)
    divide = getattr(config, "logits_scaling", None)
    softcap = getattr(config, "final_logit_softcapping", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return transform


@torch.no_grad()
def check_head(model, input_ids: torch.Tensor, length: int = 16) -> None:
    """Raise if backbone + head (as `score_label_tokens` uses them) disagree with the model's own logits."""
    ids = input_ids[:1, :length]
    reference = torch.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1)[0]
    decoder, head = decoder_and_head(model)
    output = decoder(input_ids=ids, use_cache=False)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    ours = torch.log_softmax(_logit_transform(model)(head(hidden[0]).float()), dim=-1)
    tolerance = 1e-3 if hidden.dtype == torch.float32 else 5e-2
    difference = (ours - reference).abs().max().item()
    if difference > tolerance:
        raise RuntimeError(
            f"{type(model).__name__}: log-probabilities from the backbone + LM head differ from the model's own "
            f"forward by {difference:.3g}; its head applies a transformation sftmix.evaluation does not know. "
            "Add it to `_logit_transform` in sftmix/evaluation/token_scores.py."
        )


def pad_batch(sequences: list[list[int]], labels: list[list[int]], pad_token_id: int, device) -> dict:
    """Right-padded `input_ids`, `attention_mask` and `labels` (-100 on padding) tensors."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    padded_labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    for i, (ids, row_labels) in enumerate(zip(sequences, labels, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        padded_labels[i, : len(row_labels)] = torch.tensor(row_labels)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "labels": padded_labels,
    }


def model_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.no_grad()
def score_label_tokens(model, input_ids, attention_mask, labels, chunk_size: int = 512) -> LabelTokenScores:
    """Scores of every labelled token of the batch, in row-major order of their positions."""
    decoder, head = decoder_and_head(model)
    output = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    targets = labels[:, 1:].to(hidden.device)
    keep = targets != IGNORE_INDEX
    rows = keep.nonzero(as_tuple=True)[0]
    selected, targets = hidden[:, :-1][keep], targets[keep]
    transform = _logit_transform(model)
    logprob, confidence, correct = [], [], []
    for start in range(0, len(targets), chunk_size):
        logits = transform(head(selected[start : start + chunk_size]).float())
        logps = torch.log_softmax(logits, dim=-1)
        target = targets[start : start + chunk_size]
        best, argmax = logps.max(dim=-1)
        logprob.append(logps.gather(-1, target[:, None]).squeeze(-1))
        confidence.append(best.exp())
        correct.append(argmax == target)
    empty = torch.zeros(0, device=hidden.device)
    return LabelTokenScores(
        row=rows.cpu(),
        logprob=torch.cat(logprob).cpu() if logprob else empty.cpu(),
        confidence=torch.cat(confidence).cpu() if confidence else empty.cpu(),
        correct=torch.cat(correct).cpu() if correct else empty.bool().cpu(),
    )
