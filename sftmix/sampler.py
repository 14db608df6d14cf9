"""Micro-batches of k confident then k unconfident examples, each group shuffled: the i-th of one is paired with
the i-th of the other. Epochs, the smaller group's cycling and why pairs never straddle processes:
docs/choices.md ("Pairing and epochs"). The last micro-batch is filled the same way, so every one is full."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ConfidencePairSampler(Sampler[int]):
    def __init__(self, confident: Sequence[bool], batch_size: int, seed: int = 0):
        if batch_size < 2 or batch_size % 2:
            raise ValueError(
                f"SFTMix needs an even per-device batch size (half confident, half unconfident), got {batch_size}. "
                "Set `per_device_train_batch_size` to an even number."
            )
        flags = torch.as_tensor([bool(x) for x in confident], dtype=torch.bool)
        self.confident_ids = flags.nonzero().flatten()
        self.unconfident_ids = (~flags).nonzero().flatten()
        if self.confident_ids.numel() == 0 or self.unconfident_ids.numel() == 0:
            raise ValueError(
                f"One confidence group is empty ({self.confident_ids.numel()} confident, "
                f"{self.unconfident_ids.numel()} unconfident examples); SFTMix pairs one with the other. "
                "Check the confidence column or rerun the dynamics pass."
            )
        self.half = batch_size // 2
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        larger = max(self.confident_ids.numel(), self.unconfident_ids.numel())
        self.num_batches = math.ceil(larger / self.half)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def _stream(self, ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`num_batches * half` ids: whole shuffled passes over `ids`, as many as needed."""
        needed = self.num_batches * self.half
        passes = math.ceil(needed / ids.numel())
        return torch.cat([ids[torch.randperm(ids.numel(), generator=generator)] for _ in range(passes)])[:needed]

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        confident = self._stream(self.confident_ids, generator).view(self.num_batches, self.half)
        unconfident = self._stream(self.unconfident_ids, generator).view(self.num_batches, self.half)
        yield from torch.cat([confident, unconfident], dim=1).flatten().tolist()


class TrainingDynamicsSampler(Sampler[int]):
    """The sampler of `training_dynamics` runs: epochs without a split (`split_for_epoch` returns None) are a seeded
    random permutation, as plain SFT draws them; an epoch with a split is `ConfidencePairSampler`'s over it. Both
    give ceil(N / batch) micro-batches, so the Trainer's schedule is plain SFT's."""

    def __init__(self, num_examples: int, batch_size: int, split_for_epoch, seed: int = 0):
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.split_for_epoch = split_for_epoch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[int]:
        flags = self.split_for_epoch(self.epoch)
        if flags is not None:
            pairs = ConfidencePairSampler(flags, self.batch_size, self.seed)
            pairs.set_epoch(self.epoch)
            yield from pairs
            return
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_examples, generator=generator).tolist()
