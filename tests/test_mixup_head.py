"""The lean Mixup head (`ChunkedMixedCrossEntropy`): tiles over tokens and vocabulary slices, exact in fp32/fp64,
within bf16 rounding of an fp32 computation in bf16, and never an fp32 copy or fp32 gradient of the whole head."""

from contextlib import nullcontext

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sftmix.mixup as mixup
from sftmix.mixup import ChunkedMixedCrossEntropy, HeadTransform


def no_gather(*params):
    return nullcontext()


def naive(hidden, weight, bias, y_c, y_u, lam, head):
    logits = head(hidden @ weight.T + (0 if bias is None else bias))
    logp = torch.log_softmax(logits, dim=-1)
    return -(lam * logp.gather(-1, y_c[:, None])[:, 0] + (1 - lam) * logp.gather(-1, y_u[:, None])[:, 0])


def problem(dtype, n=9, d=6, vocab=23, with_bias=True, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g) * scale).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g) * scale).to(dtype).requires_grad_()
    bias = torch.randn(vocab, generator=g).to(dtype).requires_grad_() if with_bias else None
    y_c = torch.randint(0, vocab, (n,), generator=g)
    y_u = torch.randint(0, vocab, (n,), generator=g)
    y_u[0] = y_c[0]  # identical targets
    y_c[1], y_u[1] = 0, vocab - 1  # first and last vocabulary rows
    lam = torch.rand(n, generator=g)
    upstream = torch.randn(n, generator=g)
    return hidden, weight, bias, y_c, y_u, lam, upstream


@pytest.mark.parametrize("vocab_chunk", [1, 4, 7, 1000])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
@pytest.mark.parametrize("head", [HeadTransform(), HeadTransform(scale=0.5, softcap=2.0)])
def test_tiles_over_tokens_and_vocabulary_are_exact_in_fp64(monkeypatch, vocab_chunk, chunk_size, head):
    monkeypatch.setattr(mixup, "_vocab_chunk", lambda hidden_size, rows, tile=None: vocab_chunk)
    hidden, weight, bias, y_c, y_u, lam, upstream = problem(torch.float64)
    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, bias, y_c, y_u, lam, chunk_size, no_gather, head)
    ref = naive(hidden, weight, bias, y_c, y_u, lam.double(), head)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
    params = [hidden, weight, bias]
    grads_ours = torch.autograd.grad((ours * upstream.double()).sum(), params)
    grads_ref = torch.autograd.grad((ref * upstream.double()).sum(), params)
    for a, b in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("vocab_chunk", [5, 1000])
def test_fp32_matches_fp64_to_fp32_rounding(monkeypatch, vocab_chunk):
    monkeypatch.setattr(mixup, "_vocab_chunk", lambda hidden_size, rows, tile=None: vocab_chunk)
    hidden, weight, bias, y_c, y_u, lam, upstream = problem(torch.float32)
    ours = ChunkedMixedCrossEntropy.apply(hidden, weight, bias, y_c, y_u, lam, 4, no_gather, HeadTransform())
    assert ours.dtype == torch.float32
    params64 = [p.detach().double().requires_grad_() for p in (hidden, weight, bias)]
    ref = naive(*params64, y_c, y_u, lam.double(), HeadTransform())
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad((ours * upstream).sum(), [hidden, weight, bias])
    grads_ref = torch.autograd.grad((ref * upstream.double()).sum(), params64)
    for a, b in zip(grads, grads_ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vocab_chunk", [16, 1000])
@pytest.mark.parametrize("autocast", [False, True])
def test_bf16_backward_is_close_to_an_fp32_naive_computation(monkeypatch, vocab_chunk, autocast):
    """Stated tolerance: every gradient (and the loss) within 2e-2 x its largest magnitude of the fp32 naive
    computation on the same bf16 values -- the rounding of bf16 logits (as the model's own head rounds them) and of
    the bf16 gradient that is returned; the sums themselves run in fp32."""
    monkeypatch.setattr(mixup, "_vocab_chunk", lambda hidden_size, rows, tile=None: vocab_chunk)
    d = 64
    hidden, weight, bias, y_c, y_u, lam, upstream = problem(torch.bfloat16, n=37, d=d, vocab=301, scale=d**-0.25)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    with context:
        ours = ChunkedMixedCrossEntropy.apply(
            hidden, weight, bias, y_c, y_u, lam, 8, no_gather, HeadTransform(softcap=30.0)
        )
    grads = torch.autograd.grad((ours * upstream).sum(), [hidden, weight, bias])
    params32 = [p.detach().float().requires_grad_() for p in (hidden, weight, bias)]
    ref = naive(*params32, y_c, y_u, lam, HeadTransform(softcap=30.0))
    grads_ref = torch.autograd.grad((ref * upstream).sum(), params32)
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max() <= 2e-2 * ref.abs().max()
    for a, b in zip(grads, grads_ref, strict=True):
        assert a.dtype == torch.bfloat16  # returned in the parameter's dtype
        assert (a.float() - b).abs().max() <= 2e-2 * b.abs().max()
    # and the sums run in fp32: far closer than summing bf16-rounded products would be
    assert (grads[1].float() - grads_ref[1]).abs().max() <= 1e-2 * grads_ref[1].abs().max()


class LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any op creates, overall and among fp32 ones (bytes)."""

    def __init__(self):
        super().__init__()
        self.largest = (0, None)
        self.largest_fp32 = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                if t.nbytes > self.largest[0]:
                    self.largest = (t.nbytes, t.dtype)
                if t.dtype == torch.float32:
                    self.largest_fp32 = max(self.largest_fp32, t.nbytes)
        return out


def test_bf16_head_has_no_fp32_whole_head_copy_or_gradient(monkeypatch):
    """With a bf16 head, the largest tensor forward and backward create is the head's own bf16 gradient: no fp32 copy
    of the head (formerly `w.float()` per chunk), no fp32 gradient of it (formerly `zeros_like(weight, float32)`), and
    every fp32 transient is one tile of at most `TILE_ELEMENTS` values."""
    tile = 2**14
    monkeypatch.setattr(mixup, "TILE_ELEMENTS", tile)  # as 2**23 does for a 128k x 4096 head, at test scale
    vocab, d, n = 20000, 64, 200
    hidden, weight, _, y_c, y_u, lam, upstream = problem(
        torch.bfloat16, n=n, d=d, vocab=vocab, with_bias=False, scale=0.3
    )
    head_bytes = weight.numel() * weight.element_size()
    with LargestAllocation() as fwd:
        ours = ChunkedMixedCrossEntropy.apply(hidden, weight, None, y_c, y_u, lam, 64, no_gather, HeadTransform())
    with LargestAllocation() as bwd:
        _, grad_weight = torch.autograd.grad((ours * upstream).sum(), [hidden, weight])
    assert grad_weight.dtype == torch.bfloat16
    assert fwd.largest[0] <= tile * 4, fwd.largest
    assert bwd.largest == (head_bytes, torch.bfloat16), bwd.largest
    assert bwd.largest_fp32 <= tile * 4, bwd.largest_fp32
    # and the result is still right
    params32 = [hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()]
    ref = naive(*params32, None, y_c, y_u, lam, HeadTransform())
    ref_grad = torch.autograd.grad((ref * upstream).sum(), params32)[1]
    assert (grad_weight.float() - ref_grad).abs().max() <= 2e-2 * ref_grad.abs().max()


def test_tile_elements_sets_the_vocabulary_slices_and_stays_exact(monkeypatch):
    """`mixup_tile_elements` (passed as `tile_elements`) decides the vocabulary slice; every size is exact."""
    seen = []
    original = mixup._vocab_chunk

    def recording(hidden_size, rows, tile=None):
        seen.append(original(hidden_size, rows, tile))
        return seen[-1]

    monkeypatch.setattr(mixup, "_vocab_chunk", recording)
    hidden, weight, bias, y_c, y_u, lam, upstream = problem(torch.float64, n=40, d=8, vocab=3000)
    ref = naive(hidden, weight, bias, y_c, y_u, lam.double(), HeadTransform())
    grads_ref = torch.autograd.grad((ref * upstream.double()).sum(), [hidden, weight, bias])
    for tile in (2**11, 2**13, None):
        seen.clear()
        ours = ChunkedMixedCrossEntropy.apply(
            hidden, weight, bias, y_c, y_u, lam, 16, no_gather, HeadTransform(), tile
        )
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
        grads = torch.autograd.grad((ours * upstream.double()).sum(), [hidden, weight, bias])
        for a, b in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
        assert seen == [max(256, (tile or mixup.TILE_ELEMENTS) // 16)] * 2  # forward and backward


def test_trainer_passes_mixup_tile_elements(tmp_path, tiny_tokenizer):
    """Through SFTMixConfig: the same loss with small and default tiles, and the small tile really used."""
    from helpers import conversations, cpu_args, tiny_model

    from sftmix import SFTMixTrainer

    losses, used = [], []
    original = mixup._vocab_chunk
    for tile in (256, 2**23):
        model = tiny_model(tiny_tokenizer)
        args = cpu_args(tmp_path / str(tile), mixup_lambda=0.3, mixup_tile_elements=tile)
        trainer = SFTMixTrainer(model, args, train_dataset=conversations(), processing_class=tiny_tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        mixup._vocab_chunk = lambda h, r, t=None: used.append(t) or original(h, r, t)
        try:
            losses.append(trainer.compute_loss(model, dict(batch)).item())
        finally:
            mixup._vocab_chunk = original
    assert set(used) == {256, 2**23}
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
