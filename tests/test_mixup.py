"""The Mixup math against naive references: full logits, explicit soft targets, Python loops."""

import numpy as np
import pytest
import torch

from sftmix.mixup import (
    ChunkedMixedCrossEntropy,
    interpolate,
    mixed_token_count,
    mixup_index,
    mixup_loss_sum,
    pair_rows,
    sample_lambdas,
)


def naive_soft_ce(hidden, weight, bias, y_c, y_u, lam):
    """-sum_v ytilde_v log softmax(h W^T + b)_v with ytilde = lam onehot(y_c) + (1 - lam) onehot(y_u)."""
    logits = hidden @ weight.T + (0 if bias is None else bias)
    vocab = weight.shape[0]
    soft = lam[:, None] * torch.nn.functional.one_hot(y_c, vocab) + (
        1 - lam[:, None]
    ) * torch.nn.functional.one_hot(y_u, vocab)
    return -(soft * torch.log_softmax(logits, dim=-1)).sum(-1)


def no_gather(*params):
    from contextlib import nullcontext

    return nullcontext()


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_mixed_ce_matches_naive_values_and_gradients(chunk_size, with_bias):
    g = torch.Generator().manual_seed(0)
    n, d, vocab = 7, 5, 11
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    y_c = torch.randint(0, vocab, (n,), generator=g)
    y_u = torch.randint(0, vocab, (n,), generator=g)
    y_u[0] = y_c[0]  # identical targets in one position
    lam = torch.rand(n, generator=g, dtype=torch.float64)

    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, bias, y_c, y_u, lam, chunk_size, no_gather)
    ref = naive_soft_ce(hidden, weight, bias, y_c, y_u, lam)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)

    upstream = torch.randn(n, generator=g, dtype=torch.float64)
    params = [hidden, weight] + ([bias] if with_bias else [])
    grads_ours = torch.autograd.grad((ours.double() * upstream).sum(), params)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), params)
    for a, b in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lambda_one_is_the_confident_examples_own_cross_entropy():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(6, 4, generator=g)
    weight = torch.randn(9, 4, generator=g)
    y_c = torch.randint(0, 9, (6,), generator=g)
    y_u = torch.randint(0, 9, (6,), generator=g)
    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, None, y_c, y_u, torch.ones(6), 4, no_gather)
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, y_c, reduction="none")
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_pair_rows_pairs_in_order_and_rejects_unbalanced_batches():
    c, u = pair_rows(torch.tensor([True, False, True, False]))
    assert c.tolist() == [0, 2] and u.tolist() == [1, 3]
    with pytest.raises(ValueError, match="pairs them one to one"):
        pair_rows(torch.tensor([True, True, False]))


def test_mixup_index_counts_positions_from_each_response_start_and_truncates():
    # row 0: trainable positions 3,4,5 ; row 1: positions 1,2,3,4,5
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 3:6] = True
    mask[1, 1:6] = True
    index = mixup_index(mask, torch.tensor([0]), torch.tensor([1]))
    assert index.positions_c.tolist() == [3, 4, 5]
    assert index.positions_u.tolist() == [1, 2, 3]  # first n = min(3, 5) of the other response
    assert index.rows_c.tolist() == [0, 0, 0] and index.rows_u.tolist() == [1, 1, 1]
    assert index.num_tokens == 3


def test_mixed_token_count_uses_shifted_labels():
    labels = torch.tensor([[-100, -100, 5, 6, 7], [-100, 1, 2, -100, -100], [-100, -100, -100, 3, 4]])
    # shifted trainable counts: row0 3, row1 2, row2 2 ; pairs (0 conf, 1 unconf)
    assert mixed_token_count(labels[:2], torch.tensor([True, False])) == 2
    assert mixed_token_count(labels[[0, 2]], torch.tensor([False, True])) == 2


def test_interpolate():
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    out = interpolate(a, b, torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[0.25] * 3, [1.0] * 3]))


def test_sample_lambdas_modes():
    rng = np.random.default_rng(0)
    assert sample_lambdas(3, 0.5, rng, fixed=0.3).tolist() == [0.3, 0.3, 0.3]
    per_batch = sample_lambdas(4, 0.5, rng, per_batch=True)
    assert len(set(per_batch.tolist())) == 1
    draws = sample_lambdas(20000, 0.5, np.random.default_rng(1))
    assert abs(draws.mean() - 0.5) < 0.01
    assert abs(draws.var() - 0.125) < 0.005  # Var Beta(a, a) = 1 / (4 (2a + 1)) = 0.125 for a = 0.5
    assert ((draws < 0.1) | (draws > 0.9)).mean() > 0.35  # U-shaped: mass near 0 and 1


def naive_mixup_sum(hidden, labels, confident, lambdas, weight):
    """Python loops over pairs and positions, full logits, soft-target CE."""
    conf_rows = [i for i, c in enumerate(confident.tolist()) if c]
    unconf_rows = [i for i, c in enumerate(confident.tolist()) if not c]
    total = torch.zeros((), dtype=torch.float64)
    for pair, (c, u) in enumerate(zip(conf_rows, unconf_rows, strict=True)):
        pos_c = [t for t in range(labels.shape[1]) if labels[c, t] != -100]
        pos_u = [t for t in range(labels.shape[1]) if labels[u, t] != -100]
        lam = float(lambdas[pair])
        for tc, tu in zip(pos_c, pos_u, strict=False):  # zip stops at the shorter: n = min(N_c, N_u)
            z = lam * hidden[c, tc].double() + (1 - lam) * hidden[u, tu].double()
            logp = torch.log_softmax(weight.double() @ z, dim=-1)
            total = total - lam * logp[labels[c, tc]] - (1 - lam) * logp[labels[u, tu]]
    return total


def test_mixup_loss_sum_matches_a_loop_over_pairs():
    g = torch.Generator().manual_seed(2)
    batch, seq, d, vocab = 4, 9, 6, 13
    hidden = torch.randn(batch, seq, d, generator=g)
    weight = torch.randn(vocab, d, generator=g)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[0, :4] = -100
    labels[1, :2] = -100
    labels[1, 7:] = -100
    labels[2, :6] = -100
    confident = torch.tensor([False, True, True, False])
    lambdas = torch.tensor([0.2, 0.9])
    c, u = pair_rows(confident)
    index = mixup_index(labels != -100, c, u)
    ours = mixup_loss_sum(hidden, labels, index, lambdas, weight, chunk_size=5)
    torch.testing.assert_close(
        ours.double(), naive_mixup_sum(hidden, labels, confident, lambdas, weight), atol=1e-4, rtol=1e-5
    )
