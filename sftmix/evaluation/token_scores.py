"""Per-token scores of a causal LM at its labelled positions, without batch x sequence x vocabulary logits.

The backbone (`model.get_decoder()`) runs once; only the hidden states of positions whose next token has a label
(labels != -100, HF convention: `labels[t + 1]` is predicted at position t) go through the LM head
(`model.get_output_embeddings()`), `chunk_size` positions at a time, then the head's logit transform as training reads
it (`sftmix.forward.head_transform`), in float32 for the softmax. A PEFT model works
the same way: its decoder and head are the base model's modules with the adapters injected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sftmix.forward import head_transform

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


@torch.no_grad()
def check_head(model, input_ids: torch.Tensor, length: int = 16) -> None:
    """Raise if backbone + head (as `score_label_tokens` uses them) disagree with the model's own logits: the
    training probe's check (sftmix.forward) on the model being evaluated."""
    from sftmix.forward import check_head_logits

    ids = input_ids[:1, :length]
    own = model(input_ids=ids, use_cache=False).logits
    decoder, lm_head = decoder_and_head(model)
    output = decoder(input_ids=ids, use_cache=False)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    transform = head_transform(model.config)
    low_precision = hidden.dtype in (torch.float16, torch.bfloat16)
    check_head_logits(own, transform(lm_head(hidden).float()), transform, model.config, low_precision)


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
    transform = head_transform(model.config)
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
