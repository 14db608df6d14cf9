"""Held-out next-token prediction: loss, perplexity, token accuracy and calibration on the trainable tokens.

All four are token-level over the whole held-out set: loss = mean over trainable tokens of -log p(label),
perplexity = exp(loss), token accuracy = share of tokens whose argmax is the label, ECE over the tokens'
confidences (sftmix.evaluation.calibration). Tokenisation follows training (sftmix.evaluation.encoding);
examples left with no trainable token (after truncation) are skipped and counted, as TRL drops them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sftmix.evaluation.calibration import ReliabilityStats
from sftmix.evaluation.encoding import encode_sft_example, num_trainable
from sftmix.evaluation.token_scores import check_head, model_device, pad_batch, score_label_tokens


@dataclass
class HeldoutResult:
    loss: float
    perplexity: float
    token_accuracy: float
    ece: float
    tokens: int
    examples: int
    skipped_examples: int
    reliability: ReliabilityStats

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "token_accuracy": self.token_accuracy,
            "ece": self.ece,
            "max_calibration_error": self.reliability.max_calibration_error(),
            "tokens": self.tokens,
            "examples": self.examples,
            "skipped_examples": self.skipped_examples,
            "reliability": self.reliability.to_dict(),
        }


def load_heldout(path: str | Path, dataset_format: str = "auto"):
    """A local held-out file as a `datasets.Dataset` in `messages`, prompt/completion or `text` format.

    The whole file is read and checked now; bad rows are named by line, and an empty file is an error.
    """
    import datasets

    from sftmix.data import FILE_BUILDERS, DataError, locate_rows

    path = Path(path)
    if path.suffix not in FILE_BUILDERS:
        raise ValueError(
            f"Held-out file {path} has an unsupported extension; use one of {sorted(FILE_BUILDERS)}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"Held-out file {path} does not exist. Fix the path given as `heldout`.")
    try:
        origins = locate_rows([str(path)], dataset_format)
    except DataError as error:
        raise DataError(
            f"The held-out file (`heldout`) has {len(error.problems)} problem(s):", error.problems
        ) from None
    dataset = datasets.load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), split="train")
    return as_sft_dataset(dataset, dataset_format, origins if len(origins) == len(dataset) else None)


def as_sft_dataset(data, dataset_format: str = "auto", origins: list[str] | None = None):
    """A `datasets.Dataset` (or a list of dicts) brought to an SFT format and checked row by row."""
    import datasets

    from sftmix.data import DataError, to_sft_format

    if isinstance(data, list):
        data = datasets.Dataset.from_list(data)
    if len(data) == 0:
        raise DataError("The held-out set is empty.", ["the held-out set has no rows: give it rows"])
    return to_sft_format(data, dataset_format, keep_columns=(), origins=origins)


def heldout_metrics(
    model,
    tokenizer,
    dataset,
    *,
    batch_size: int = 8,
    max_length: int | None = 2048,
    max_examples: int | None = None,
    num_bins: int = 15,
    chunk_size: int = 512,
    dataset_format: str = "auto",
    show_progress: bool = True,
) -> HeldoutResult:
    """Token-level NTP metrics of `model` on `dataset` (a Dataset or a list of dicts in an SFT format)."""
    import torch
    from tqdm.auto import tqdm

    dataset = as_sft_dataset(dataset, dataset_format)
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    rows = tqdm(dataset, desc="Tokenising held-out", unit="example", disable=not show_progress)
    encoded = [encode_sft_example(row, tokenizer, max_length) for row in rows]
    kept = [e for e in encoded if num_trainable(e["labels"]) > 0]
    if not kept:
        raise ValueError(
            f"None of the {len(encoded)} held-out examples has a trainable token (after truncation to "
            f"{max_length} tokens); check the data format and `max_length`."
        )
    order = sorted(range(len(kept)), key=lambda i: -len(kept[i]["input_ids"]))  # less padding per batch
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    was_training = model.training
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    reliability = ReliabilityStats.empty(num_bins)
    try:
        check_head(model, torch.tensor([kept[order[0]]["input_ids"]], device=device))
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="Held-out NTP", unit="batch", disable=not show_progress):
            rows = [kept[i] for i in order[start : start + batch_size]]
            batch = pad_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], pad_id, device)
            scores = score_label_tokens(model, **batch, chunk_size=chunk_size)
            loss_sum -= scores.logprob.double().sum().item()
            correct += int(scores.correct.sum())
            tokens += len(scores.logprob)
            reliability = reliability + ReliabilityStats.from_predictions(
                scores.confidence.numpy(), scores.correct.numpy(), num_bins
            )
    finally:
        model.train(was_training)
    loss = loss_sum / tokens
    return HeldoutResult(
        loss=loss,
        perplexity=math.exp(loss) if loss < 700 else float("inf"),
        token_accuracy=correct / tokens,
        ece=reliability.expected_calibration_error(),
        tokens=tokens,
        examples=len(kept),
        skipped_examples=len(encoded) - len(kept),
        reliability=reliability,
    )
