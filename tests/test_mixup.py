"""The Mixup math against naive references: full logits, explicit soft targets, Python loops."""

import numpy as np
import pytest
import torch

from sftmix.mixup import (
    ChunkedMixedCrossEntropy,
    HeadTransform,
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
    soft = lam[:, None] * torch.nn.functional.one_hot(y_c, vocab) + (1 - lam[:, None]) * torch.nn.functional.one_hot(
        y_u, vocab
    )
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

    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, bias, y_c, y_u, lam, chunk_size, no_gather, HeadTransform())
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
    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, None, y_c, y_u, torch.ones(6), 4, no_gather, HeadTransform())
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


def test_mixed_token_count_uses_the_shifted_response_mask():
    response = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    # shifted response counts: row0 3, row1 2, row2 2 ; pairs (0 conf, 1 unconf)
    assert mixed_token_count(response[:2], torch.tensor([True, False])) == 2
    assert mixed_token_count(response[[0, 2]], torch.tensor([False, True])) == 2
    # a response token at position 0 predicts nothing (no hidden state before it)
    first = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert mixed_token_count(first, torch.tensor([True, False])) == 1


def test_turn_alignment_pairs_turn_i_with_turn_i():
    # row 0: turns at 1-2 and 5-7 ; row 1: turns at 2-4, 6 and 8-9 (three turns)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, [1, 2, 5, 6, 7]] = True
    mask[1, [2, 3, 4, 6, 8, 9]] = True
    turn = mixup_index(mask, torch.tensor([0]), torch.tensor([1]), alignment="turn")
    assert turn.positions_c.tolist() == [
        1,
        2,
        5,
    ]  # turn 1: min(2, 3) ; turn 2: min(3, 1) ; no turn 3 in row 0
    assert turn.positions_u.tolist() == [2, 3, 6]
    whole = mixup_index(mask, torch.tensor([0]), torch.tensor([1]), alignment="response")
    assert whole.positions_c.tolist() == [1, 2, 5, 6, 7]
    assert whole.positions_u.tolist() == [2, 3, 4, 6, 8]


def naive_transformed_ce(hidden, weight, y_c, y_u, lam, scale, softcap):
    logits = (hidden @ weight.T) * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    logp = torch.log_softmax(logits, dim=-1)
    return -(lam * logp.gather(-1, y_c[:, None])[:, 0] + (1 - lam) * logp.gather(-1, y_u[:, None])[:, 0])


@pytest.mark.parametrize("scale, softcap", [(1.0, 2.0), (0.25, None), (8.0, None), (3.0, 1.5)])
def test_chunked_mixed_ce_applies_the_heads_scaling_and_softcapping(scale, softcap):
    g = torch.Generator().manual_seed(3)
    n, d, vocab = 9, 6, 17
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g, dtype=torch.float64, requires_grad=True)
    y_c = torch.randint(0, vocab, (n,), generator=g)
    y_u = torch.randint(0, vocab, (n,), generator=g)
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    head = HeadTransform(scale=scale, softcap=softcap)
    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, None, y_c, y_u, lam, 4, no_gather, head)
    ref = naive_transformed_ce(hidden, weight, y_c, y_u, lam, scale, softcap)
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    upstream = torch.randn(n, generator=g, dtype=torch.float64)
    grads_ours = torch.autograd.grad((ours.double() * upstream).sum(), [hidden, weight])
    grads_ref = torch.autograd.grad((ref * upstream).sum(), [hidden, weight])
    for a, b in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and the transform matters here: the plain head gives another value
    plain = naive_transformed_ce(hidden, weight, y_c, y_u, lam, 1.0, None)
    assert (plain - ref).abs().max() > 1e-2


def test_bf16_mixup_matches_an_fp32_naive_computation():
    """Hidden states and head in bf16: lambda is applied in fp32, the result cast once; the loss stays within
    bf16 rounding of the fp32 naive value (stated tolerance: 2e-2 relative on the summed loss)."""
    g = torch.Generator().manual_seed(4)
    batch, seq, d, vocab = 4, 12, 32, 50
    hidden = torch.randn(batch, seq, d, generator=g)
    weight = torch.randn(vocab, d, generator=g) / d**0.5
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    confident = torch.tensor([True, False, True, False])
    lambdas = torch.tensor([0.3337, 0.9013])  # not representable in bf16
    c, u = pair_rows(confident)
    index = mixup_index(torch.ones(batch, seq, dtype=torch.bool), c, u)
    ours = mixup_loss_sum(hidden.bfloat16(), labels, index, lambdas, weight.bfloat16(), chunk_size=7)
    naive = naive_mixup_sum(hidden, labels, confident, lambdas, weight)
    torch.testing.assert_close(ours.double(), naive, rtol=2e-2, atol=0)
    # the interpolation itself: lambda in fp32, one rounding to bf16 at the end
    z_c, z_u = hidden[0, :3].bfloat16(), hidden[1, :3].bfloat16()
    lam = torch.full((3,), 0.3337)
    exact = (lam[:, None] * z_c.double() + (1 - lam[:, None]) * z_u.double()).bfloat16()
    assert torch.equal(interpolate(z_c, z_u, lam), exact)


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
