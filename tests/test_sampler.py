import math
from collections import Counter

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from sftmix.sampler import ConfidencePairSampler

GROUPS = [i % 3 == 0 for i in range(23)]  # 8 confident, 15 unconfident


def batches(sampler):
    order = list(sampler)
    return [order[i : i + sampler.batch_size] for i in range(0, len(order), sampler.batch_size)]


def test_every_batch_is_half_confident_then_half_unconfident():
    sampler = ConfidencePairSampler(GROUPS, batch_size=4, seed=0)
    for batch in batches(sampler):
        assert [GROUPS[i] for i in batch] == [True, True, False, False]


def test_an_epoch_sees_the_larger_group_once_and_cycles_the_smaller():
    sampler = ConfidencePairSampler(GROUPS, batch_size=4, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == math.ceil(15 / 2) * 4
    unconfident = Counter(i for i in order if not GROUPS[i])
    confident = Counter(i for i in order if GROUPS[i])
    assert set(unconfident) == {i for i, g in enumerate(GROUPS) if not g}
    assert max(unconfident.values()) - min(unconfident.values()) <= 1  # once, plus one to fill the last batch
    assert set(confident) == {i for i, g in enumerate(GROUPS) if g}
    assert max(confident.values()) - min(confident.values()) <= 1  # cycled evenly


def test_same_seed_and_epoch_same_order_other_epoch_other_order():
    a, b = ConfidencePairSampler(GROUPS, 4, seed=3), ConfidencePairSampler(GROUPS, 4, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(ConfidencePairSampler(GROUPS, 4, seed=4)) != list(ConfidencePairSampler(GROUPS, 4, seed=3))


def test_pairs_stay_together_when_accelerate_deals_batches_to_processes():
    sampler = ConfidencePairSampler(GROUPS, batch_size=4, seed=0)
    for rank in range(2):
        shard = BatchSamplerShard(
            BatchSampler(sampler, 4, drop_last=False), num_processes=2, process_index=rank, even_batches=True
        )
        for batch in shard:
            assert [GROUPS[i] for i in batch] == [True, True, False, False]


def test_bad_batch_sizes_and_empty_groups_are_errors():
    with pytest.raises(ValueError, match="even per-device batch size"):
        ConfidencePairSampler(GROUPS, batch_size=3)
    with pytest.raises(ValueError, match="One confidence group is empty"):
        ConfidencePairSampler([True] * 5, batch_size=2)
