"""Held-out next-token prediction on the trainable tokens: loss, perplexity, token accuracy and calibration (ECE).

Definitions, preparation (TRL's own, with the training run's label settings), chunked scoring through the LM head
and the split over processes (`Shard`): docs/evaluation.md ("Held-out NTP").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sftmix.evaluation.calibration import ReliabilityStats
from sftmix.evaluation.label_settings import LabelSettings
from sftmix.forward import head_transform

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Shard:
    """This process's place in a launch: it scores batches rank, rank + world_size, ... of the held-out set."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batch_indices(self, num_batches: int) -> range:
        return range(self.rank, num_batches, self.world_size)

    def gather(self, items: list) -> list:
        """Every process's `items`, concatenated (on every process)."""
        if self.world_size == 1:
            return list(items)
        import torch.distributed as dist

        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, list(items))
        return [item for part in gathered for item in part]


def current_shard() -> Shard:
    """This process's place in the launch (the process group starts here if the launcher set one up)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()  # initialises torch.distributed from the launcher's environment
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


@dataclass
class LabelTokenScores:
    row: torch.Tensor  # (N,) batch row of each scored token
    logprob: torch.Tensor  # (N,) log p(label | prefix)
    confidence: torch.Tensor  # (N,) largest next-token probability
    correct: torch.Tensor  # (N,) bool: argmax == label


def _backbone(model, **inputs):
    """The backbone's last hidden states on `inputs`, the LM head and its logit transform."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is model:
        raise TypeError(
            f"Cannot split {type(model).__name__} into a backbone and an LM head (`get_decoder()` / "
            "`get_output_embeddings()`); evaluation needs a causal LM such as AutoModelForCausalLM returns."
        )
    output = decoder(**inputs, use_cache=False)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    return hidden, head, head_transform(model.config)


@torch.no_grad()
def check_head(model, input_ids: torch.Tensor, length: int = 16) -> None:
    """Raise if backbone + head (as `score_label_tokens` uses them) disagree with the model's own logits: the
    training probe's check (sftmix.forward) on the model being evaluated."""
    from sftmix.forward import check_head_logits

    ids = input_ids[:1, :length]
    own = model(input_ids=ids, use_cache=False).logits
    hidden, lm_head, transform = _backbone(model, input_ids=ids)
    low_precision = hidden.dtype in (torch.float16, torch.bfloat16)
    check_head_logits(own, transform(lm_head(hidden).float()), transform, model.config, low_precision)


@torch.no_grad()
def score_label_tokens(model, input_ids, attention_mask, labels, chunk_size: int = 512) -> LabelTokenScores:
    """Scores of every labelled token of the batch, in row-major order of their positions."""
    hidden, head, transform = _backbone(model, input_ids=input_ids, attention_mask=attention_mask)
    targets = labels[:, 1:].to(hidden.device)
    keep = targets != IGNORE_INDEX
    selected, targets = hidden[:, :-1][keep], targets[keep]
    logprob, confidence, correct = [], [], []
    for start in range(0, max(len(targets), 1), chunk_size):  # one empty chunk when there is no label
        logps = torch.log_softmax(transform(head(selected[start : start + chunk_size]).float()), dim=-1)
        target = targets[start : start + chunk_size]
        best, argmax = logps.max(dim=-1)
        logprob.append(logps.gather(-1, target[:, None]).squeeze(-1))
        confidence.append(best.exp())
        correct.append(argmax == target)
    return LabelTokenScores(
        keep.nonzero(as_tuple=True)[0].cpu(),
        torch.cat(logprob).cpu(),
        torch.cat(confidence).cpu(),
        torch.cat(correct).cpu(),
    )


def prepare_heldout(dataset, tokenizer, settings: LabelSettings | None = None):
    """`dataset` (a `datasets.Dataset` in an SFT format) as SFTTrainer prepares it for training: `input_ids` and
    `labels` columns; examples left without a trainable token are dropped, as TRL drops them."""
    import copy
    import tempfile

    from trl import SFTConfig, SFTTrainer

    from sftmix._trl_compat import placeholder_model
    from sftmix.response import assistant_only_loss_for, check_marks_assistant

    settings = settings or LabelSettings()
    tokenizer = copy.deepcopy(tokenizer)  # SFTTrainer may set the pad token or the template on it
    if settings.chat_template:
        tokenizer.chat_template = settings.chat_template
    with tempfile.TemporaryDirectory() as output_dir:
        args = SFTConfig(  # assistant_only_loss=None resolved on the data, as SFTMixConfig resolves it
            output_dir,
            max_length=settings.max_length,
            truncation_mode=settings.truncation_mode,
            assistant_only_loss=assistant_only_loss_for(settings.assistant_only_loss, dataset[0]),
            completion_only_loss=settings.completion_only_loss,
            dataset_text_field=settings.dataset_text_field,
            eos_token=settings.eos_token,
            bf16=False,
            fp16=False,
            activation_checkpointing=False,
            report_to="none",
            save_strategy="no",
            dataset_num_proc=None,
            disable_tqdm=True,
        )
        if args.assistant_only_loss:
            check_marks_assistant(tokenizer)  # sftmix's error and fix, before TRL's
        try:
            trainer = SFTTrainer(
                placeholder_model(len(tokenizer)), args, train_dataset=dataset, processing_class=tokenizer
            )
        except ValueError as error:
            raise ValueError(
                f"The held-out set cannot be labelled as training labelled its data ({error}). The model was trained "
                f"with assistant_only_loss={args.assistant_only_loss}; give held-out rows in the training data's format."
            ) from error
        prepared = trainer.train_dataset
        del trainer
    return prepared.select_columns(["input_ids", "labels"])


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
        raise ValueError(f"Held-out file {path} has an unsupported extension; use one of {sorted(FILE_BUILDERS)}.")
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
    SFTTrainer's preparation under `label_settings` (the training run's). With `shard`, each process scores its
    share of the batches and all get the totals."""
    from tqdm.auto import tqdm

    from sftmix._trl_compat import DataCollatorForLanguageModeling

    shard = shard or Shard()
    label_settings = label_settings or LabelSettings()
    dataset = as_sft_dataset(dataset, dataset_format)
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    prepared = prepare_heldout(dataset, tokenizer, label_settings)
    # a row's first token is never predicted, so only labels[1:] can be trainable
    kept = [row for row in prepared if any(label != IGNORE_INDEX for label in row["labels"][1:])]
    if not kept:
        raise ValueError(
            f"None of the {len(dataset)} held-out examples has a trainable token (after truncation to "
            f"{label_settings.max_length} tokens); check the data format and `max_length`."
        )
    order = sorted(range(len(kept)), key=lambda i: -len(kept[i]["input_ids"]))  # less padding per batch
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    # training's padding (TRL's collator): right, labels -100 on the padding
    collate = DataCollatorForLanguageModeling(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    mine = []  # (batch index, -sum of log-probs, correct, tokens, ReliabilityStats) of this process's batches
    try:
        check_head(model, torch.tensor([kept[order[0]]["input_ids"]], device=device))
        for b in tqdm(shard.batch_indices(len(batches)), desc="Held-out NTP", unit="batch", disable=not show_progress):
            batch = collate([kept[i] for i in batches[b]])
            input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            scores = score_label_tokens(model, input_ids, attention_mask, batch["labels"], chunk_size=chunk_size)
            stats = ReliabilityStats.from_predictions(scores.confidence.numpy(), scores.correct.numpy(), num_bins)
            mine.append(
                (
                    b,
                    -scores.logprob.double().sum().item(),
                    int(scores.correct.sum()),
                    len(scores.logprob),
                    stats,
                )
            )
    finally:
        model.train(was_training)
    _, losses, correct, counts, stats = zip(*sorted(shard.gather(mine), key=lambda item: item[0]), strict=True)
    tokens = sum(counts)
    loss = sum(losses, 0.0) / tokens
    reliability = sum(stats, ReliabilityStats.empty(num_bins))  # added up in batch order
    return HeldoutResult(
        loss=loss,
        perplexity=math.exp(loss) if loss < 700 else float("inf"),
        token_accuracy=sum(correct) / tokens,
        ece=reliability.expected_calibration_error(),
        tokens=tokens,
        examples=len(kept),
        skipped_examples=len(dataset) - len(kept),
        reliability=reliability,
    )
