"""Evaluation shared by every process of a launch, with the results of one process.

Work is cut into batches in one fixed order (longest first) on every process; process r scores batches r, r + W,
r + 2W, ... of W processes, and every process gathers all the batches' results and adds them up in batch order. A
batch holds the same sequences whatever W is, so each number is the one a single process computes, bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batch_indices(self, num_batches: int) -> range:
        """The batches this process scores."""
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
