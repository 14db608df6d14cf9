"""One forward-only pass over the prepared training data: every example's response perplexity (`sftmix.response`'s
tokens, after the causal shift) at one checkpoint, through TRL's fused LM head, sharded and gathered in row order."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from sftmix._trl_compat import fused_log_probs_head
from sftmix.dynamics.examples import ROW_INDEX
from sftmix.response import RESPONSE_MASK

# Gathered per example, as float64 (exact for row indices and token counts below 2**53)
_STAT_FIELDS = ("row_index", "num_input_tokens", "num_tokens", "nll_sum", "probability_sum", "alone_nll_sum")


@dataclass
class CheckpointScores:
    """Scores of the examples at one checkpoint, sorted by row index of the raw training dataset."""

    row_index: np.ndarray  # int64
    num_tokens: np.ndarray  # int64, trainable tokens scored
    perplexity: np.ndarray  # float64, exp(mean NLL over the trainable tokens)
    mean_probability: np.ndarray  # float64, mean over the trainable tokens of p(token)
    # float64, exp(mean NLL of the response tokens alone, after the start token); None unless scored (IFD)
    alone_perplexity: np.ndarray | None = None

    @classmethod
    def from_sums(cls, stats: np.ndarray, prompt_free: bool = False) -> CheckpointScores:
        """From gathered rows of `_STAT_FIELDS`; duplicates (accelerate's padding of the last round) dropped."""
        rows, first = np.unique(stats[:, 0].astype(np.int64), return_index=True)
        stats = stats[first]
        num_tokens = stats[:, 2].astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            perplexity = np.exp(stats[:, 3] / num_tokens)
            mean_probability = stats[:, 4] / num_tokens
            alone = np.exp(stats[:, 5] / num_tokens) if prompt_free else None
        return cls(rows, num_tokens, perplexity, mean_probability, alone)


def example_sums(log_probs: torch.Tensor, label_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per example: trainable-token count, summed NLL and summed token probability (float64)."""
    mask = label_mask.bool()
    log_probs = log_probs.double().masked_fill(~mask, 0.0)
    probabilities = log_probs.exp().masked_fill(~mask, 0.0)
    return mask.sum(dim=1).double(), -log_probs.sum(dim=1), probabilities.sum(dim=1)


def sequence_lengths(dataset, batch_size: int = 10_000) -> np.ndarray:
    """Token count of every row, read from Arrow batch by batch (not as Python lists of every token id)."""
    import pyarrow.compute as pc

    column = dataset.select_columns(["input_ids"]).with_format("arrow")
    lengths = [pc.list_value_length(batch["input_ids"]).to_numpy() for batch in column.iter(batch_size=batch_size)]
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def length_sorted_order(lengths) -> list[int]:
    """Indices by decreasing length (ties by index): similar lengths share a batch, and a batch that does not fit
    in memory fails first rather than at the end of a long pass."""
    lengths = np.asarray(lengths)
    return np.lexsort((np.arange(len(lengths)), -lengths)).tolist()


PROMPT_FREE = "sftmix_prompt_free"


def _collate(examples, collator, prompt_free_start: int | None = None):
    """The trainer's collator (padding, attention mask) with the response as labels, plus each example's row index;
    with `prompt_free_start`, also the batch of the responses alone (`PROMPT_FREE`)."""
    batch = collator([{"input_ids": e["input_ids"], "labels": response_labels(e)} for e in examples])
    batch[ROW_INDEX] = torch.tensor([e[ROW_INDEX] for e in examples], dtype=torch.long)
    if prompt_free_start is not None:
        alone = [response_alone(e, prompt_free_start) for e in examples]
        batch[PROMPT_FREE] = collator([{"input_ids": ids, "labels": [-100, *ids[1:]]} for ids in alone])
    return batch


def response_alone(example, start: int) -> list[int]:
    """`start`, then the example's response tokens that the prompted forward scores (after the causal shift)."""
    tokens, mask = example["input_ids"], example[RESPONSE_MASK]
    return [start, *(token for token, bit in zip(tokens[1:], mask[1:], strict=True) if bit)]


def response_labels(example) -> list[int]:
    """The example's tokens where they are response (`RESPONSE_MASK`), -100 elsewhere: what is scored."""
    return [t if bit else -100 for t, bit in zip(example["input_ids"], example[RESPONSE_MASK], strict=True)]


@torch.no_grad()
def score_dataset(trainer, batch_size: int, desc: str = "Scoring", prompt_free_start: int | None = None):
    """Score every row of `trainer`'s prepared train dataset through `trainer.scoring_model()`; with
    `prompt_free_start` (a token id), also its response alone. Collective: every process calls it and gets all the
    scores. Batches are length-grouped, not shuffled, and sharded by accelerate."""
    from functools import partial

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    model, accelerator, args = trainer.scoring_model(), trainer.accelerator, trainer.args
    dataset = trainer.train_dataset.select_columns(["input_ids", RESPONSE_MASK, ROW_INDEX])
    order = length_sorted_order(sequence_lengths(dataset))
    collate = partial(_collate, collator=trainer.data_collator, prompt_free_start=prompt_free_start)
    loader = accelerator.prepare(
        DataLoader(dataset, batch_size, sampler=order, collate_fn=collate, num_workers=args.dataloader_num_workers)
    )
    was_training = model.training
    model.eval()
    progress = tqdm(
        total=len(dataset), desc=desc, unit="ex", disable=args.disable_tqdm or not accelerator.is_main_process
    )
    gathered, tokens, started = [], 0, time.perf_counter()
    try:
        with fused_log_probs_head(accelerator.unwrap_model(model)):
            for batch in loader:
                rows, alone = batch.pop(ROW_INDEX), batch.pop(PROMPT_FREE, None)
                with accelerator.autocast():
                    outputs = model(**batch, fused_lm_head=True)
                num_tokens, nll_sum, probability_sum = example_sums(outputs.log_probs, outputs.label_mask)
                alone_nll_sum = torch.zeros_like(nll_sum)
                if alone is not None:
                    with accelerator.autocast():
                        outputs = model(**alone, fused_lm_head=True)
                    alone_nll_sum = example_sums(outputs.log_probs, outputs.label_mask)[1]
                counts = [t.double().to(nll_sum.device) for t in (rows, batch["attention_mask"].sum(1))]
                stats = torch.stack([*counts, num_tokens, nll_sum, probability_sum, alone_nll_sum], dim=1)
                stats = accelerator.gather_for_metrics(stats).cpu()
                gathered.append(stats)
                tokens += int(stats[:, 1].sum())
                progress.update(len(stats))
                progress.set_postfix(tokens_per_s=f"{tokens / max(time.perf_counter() - started, 1e-9):,.0f}")
    finally:
        progress.close()
        model.train(was_training)
    stats = torch.cat(gathered).numpy() if gathered else np.zeros((0, len(_STAT_FIELDS)))
    return CheckpointScores.from_sums(stats, prompt_free=prompt_free_start is not None)
