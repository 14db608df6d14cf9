"""Stage-1 arithmetic: confidence and Cartography statistics, the quantile split, checkpoint spacing, settings."""

import math
from dataclasses import fields

import numpy as np
import pytest

from sftmix.dynamics import DynamicsConfig
from sftmix.dynamics.reference import checkpoint_steps
from sftmix.dynamics.split import confidence, mean_probability, split_confident, variability


def test_confidence_and_cartography_statistics_match_their_definitions():
    perplexities = np.array([[2.0, 4.0, 6.0], [1.5, 1.5, 1.5]])
    probabilities = np.array([[0.1, 0.2, 0.6], [0.5, 0.5, 0.5]])
    assert confidence(perplexities).tolist() == [-4.0, -1.5]
    assert mean_probability(probabilities) == pytest.approx([0.3, 0.5])
    expected = math.sqrt(
        ((0.1 - 0.3) ** 2 + (0.2 - 0.3) ** 2 + (0.6 - 0.3) ** 2) / 3
    )  # population std, as Cartography
    assert variability(probabilities) == pytest.approx([expected, 0.0])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("n", [2, 3, 7, 10, 51])
def test_split_is_exactly_the_quantile(n, fraction):
    rng = np.random.default_rng(n)
    scores = rng.normal(size=n)
    ids = [f"id{i:03d}" for i in range(n)]
    k = math.floor(fraction * n + 1e-9)
    if k in (0, n):
        with pytest.raises(ValueError, match="group empty"):
            split_confident(scores, ids, fraction)
        return
    confident = split_confident(scores, ids, fraction)
    assert confident.sum() == k
    assert scores[confident].min() > scores[~confident].max()
    assert set(np.flatnonzero(confident)) == set(np.argsort(-scores)[:k])


def test_median_split_of_an_odd_count_puts_the_median_example_with_the_unconfident():
    confident = split_confident([-3.0, -1.0, -2.0], ["a", "b", "c"], 0.5)
    assert confident.tolist() == [False, True, False]


def test_ties_are_broken_by_example_id_whatever_the_row_order():
    scores = np.array([-1.0, -1.0, -1.0, -1.0, -5.0, 0.0])
    ids = ["d", "b", "a", "c", "e", "f"]
    confident = dict(zip(ids, split_confident(scores, ids, 0.5), strict=True))
    assert confident == {"f": True, "a": True, "b": True, "c": False, "d": False, "e": False}
    order = [5, 3, 1, 0, 4, 2]
    shuffled = split_confident(scores[order], [ids[i] for i in order], 0.5)
    assert dict(zip([ids[i] for i in order], shuffled, strict=True)) == confident


def test_identical_examples_always_share_a_group():
    # Two copies of "x" straddle the boundary of the row-level median; both land on the same side
    scores = [-1.0, -2.0, -2.0000001, -3.0]
    confident = split_confident(scores, ["a", "x", "x", "b"], 0.5)
    assert confident[1] == confident[2]
    assert confident.tolist() == [True, False, False, False]  # 3 distinct ids -> floor(1.5) = 1 confident


def test_too_few_examples_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        split_confident([-1.0], ["a"], 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        split_confident([-1.0, -1.0], ["a", "a"], 0.5)  # one distinct example
    with pytest.raises(ValueError, match="confident group empty"):
        split_confident([-1.0, -2.0, -3.0], ["a", "b", "c"], 0.2)


def test_checkpoints_are_evenly_spaced_and_end_with_the_run():
    assert checkpoint_steps(12, 3) == [4, 8, 12]
    assert checkpoint_steps(10, 3) == [3, 7, 10]
    assert checkpoint_steps(3, 3) == [1, 2, 3]
    assert checkpoint_steps(7, 1) == [7]
    with pytest.raises(ValueError, match="fewer than `num_checkpoints=3`"):
        checkpoint_steps(2, 3)


def test_config_fields_have_help_and_parse_like_a_recipe_section():
    from transformers import HfArgumentParser

    assert all(f.metadata.get("help") for f in fields(DynamicsConfig))
    (parsed,) = HfArgumentParser(DynamicsConfig).parse_dict(
        {"num_checkpoints": 4, "confident_fraction": 0.4, "checkpoints": ["a", "b"]}
    )
    assert parsed.num_checkpoints == 4 and parsed.checkpoints == ["a", "b"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"confident_fraction": 1.0}, "strictly between 0 and 1"),
        ({"confident_fraction": 0.0}, "strictly between 0 and 1"),
        ({"num_checkpoints": 0}, "num_checkpoints"),
        ({"scoring_batch_size": 0}, "scoring_batch_size"),
        ({"checkpoints": []}, "empty list"),
    ],
)
def test_bad_settings_are_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        DynamicsConfig(**settings)


def test_batches_are_grouped_by_length_longest_first():
    from datasets import Dataset

    from sftmix.dynamics.scoring import length_sorted_order, sequence_lengths

    data = Dataset.from_dict({"input_ids": [[1] * n for n in (3, 7, 1, 7, 5)]}).select([4, 3, 2, 1, 0])
    lengths = sequence_lengths(data, batch_size=2)
    assert lengths.tolist() == [5, 7, 1, 7, 3]
    assert length_sorted_order(lengths) == [1, 3, 0, 4, 2]  # ties keep row order
