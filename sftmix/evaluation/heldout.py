"""Held-out next-token prediction: loss, perplexity, token accuracy and calibration on the trainable tokens.

All four are token-level over the whole held-out set: loss = mean over trainable tokens of -log p(label),
perplexity = exp(loss), token accuracy = share of tokens whose argmax is the label, ECE over the tokens'
confidences (sftmix.evaluation.calibration). Tokenisation and labels are SFTTrainer's own preparation under the
training run's label settings (sftmix.evaluation.encoding); examples left with no trainable token (after
truncation) are skipped and counted, as TRL drops them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sftmix.evaluation.calibration import ReliabilityStats
from sftmix.evaluation.encoding import num_trainable, prepare_heldout
from sftmix.evaluation.label_settings import LabelSettings
from sftmix.evaluation.sharding import Shard
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
    import functools

    from sftmix.data import FILE_BUILDERS, DataError, read_files, row_origins

    path = Path(path)
    if path.suffix not in FILE_BUILDERS:
        raise ValueError(
            f"Held-out file {path} has an unsupported extension; use one of {sorted(FILE_BUILDERS)}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"Held-out file {path} does not exist. Fix the path given as `heldout`.")
    try:
        dataset = read_files([str(path)], dataset_format)
        return as_sft_dataset(dataset, dataset_format, functools.partial(row_origins, [str(path)]))
    except DataError as error:
        raise DataError(
            f"The held-out file (`heldout`) has {len(error.problems)} problem(s):", error.problems
        ) from None


def as_sft_dataset(data, dataset_format: str = "auto", origins=None):
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
    label_settings: LabelSettings | None = None,
    batch_size: int = 8,
    max_examples: int | None = None,
    num_bins: int = 15,
    chunk_size: int = 512,
    dataset_format: str = "auto",
    show_progress: bool = True,
    shard: Shard | None = None,
) -> HeldoutResult:
    """Token-level NTP metrics of `model` on `dataset` (a Dataset or a list of dicts in an SFT format), labelled by
    SFTTrainer's preparation under `label_settings` (the training run's: sftmix.evaluation.label_settings).

    With `shard`, each process scores its share of the batches and all get the totals (sftmix.evaluation.sharding).
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    shard = shard or Shard()
    label_settings = label_settings or LabelSettings()
    dataset = as_sft_dataset(dataset, dataset_format)
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    prepared = prepare_heldout(dataset, tokenizer, label_settings)
    kept = [row for row in prepared if num_trainable(row["labels"]) > 0]
    if not kept:
        raise ValueError(
            f"None of the {len(dataset)} held-out examples has a trainable token (after truncation to "
            f"{label_settings.max_length} tokens); check the data format and `max_length`."
        )
    order = sorted(range(len(kept)), key=lambda i: -len(kept[i]["input_ids"]))  # less padding per batch
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_device(model)
    was_training = model.training
    model.eval()
    mine = []  # (batch index, -sum of log-probs, correct, tokens, reliability counts and sums)
    try:
        check_head(model, torch.tensor([kept[order[0]]["input_ids"]], device=device))
        indices = shard.batch_indices(len(batches))
        for b in tqdm(indices, desc="Held-out NTP", unit="batch", disable=not show_progress):
            rows = [kept[i] for i in batches[b]]
            batch = pad_batch([r["input_ids"] for r in rows], [r["labels"] for r in rows], pad_id, device)
            scores = score_label_tokens(model, **batch, chunk_size=chunk_size)
            stats = ReliabilityStats.from_predictions(
                scores.confidence.numpy(), scores.correct.numpy(), num_bins
            )
            mine.append(
                (
                    b,
                    -scores.logprob.double().sum().item(),
                    int(scores.correct.sum()),
                    len(scores.logprob),
                    (stats.count.tolist(), stats.confidence_sum.tolist(), stats.correct_sum.tolist()),
                )
            )
    finally:
        model.train(was_training)
    loss_sum, correct, tokens = 0.0, 0, 0
    reliability = ReliabilityStats.empty(num_bins)
    for _, batch_loss, batch_correct, batch_tokens, (count, confidence, right) in sorted(shard.gather(mine)):
        loss_sum += batch_loss
        correct += batch_correct
        tokens += batch_tokens
        reliability = reliability + ReliabilityStats(
            np.asarray(count, np.int64), np.asarray(confidence), np.asarray(right)
        )
    loss = loss_sum / tokens
    return HeldoutResult(
        loss=loss,
        perplexity=math.exp(loss) if loss < 700 else float("inf"),
        token_accuracy=correct / tokens,
        ece=reliability.expected_calibration_error(),
        tokens=tokens,
        examples=len(kept),
        skipped_examples=len(dataset) - len(kept),
        reliability=reliability,
    )
