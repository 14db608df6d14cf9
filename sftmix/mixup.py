"""The SFTMix Mixup term as pure functions, top to bottom.

1. `pair_rows`: the i-th confident row of a micro-batch is paired with its i-th unconfident row (the
   sampler shuffles each group, so the pairing is random).
2. `mixup_index`: for each pair, the positions whose hidden state predicts a response token, counted from
   the start of the response (all assistant turns in order) or turn by turn, truncated to the shorter.
3. `interpolate`: z~_t = lambda * z^c_t + (1 - lambda) * z^u_t.
4. `ChunkedMixedCrossEntropy`: CE of head(z~_t) (`HeadTransform`: the model's logit scaling and soft-capping)
   against lambda * onehot(y^c_t) + (1 - lambda) * onehot(y^u_t), which equals
   lambda * CE(., y^c_t) + (1 - lambda) * CE(., y^u_t) because CE is linear in the target; computed tile by tile,
   never holding (tokens x vocabulary) logits for more than `chunk_size` tokens, and recomputed in backward (as
   TRL's fused head does for NTP).
5. `mixup_loss_sum`: steps 3 and 4 over the positions of step 2, summed.

Conventions: hidden states and labels are already shifted, i.e. `hidden[:, t]` predicts `labels[:, t]`
(the caller passes `hidden[:, :-1]` and `labels[:, 1:]`), and -100 marks a position without a target.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100


def pair_rows(confident: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the confident and unconfident examples of a micro-batch, paired in order."""
    confident = confident.bool().flatten()
    confident_rows = confident.nonzero().flatten()
    unconfident_rows = (~confident).nonzero().flatten()
    if confident_rows.numel() != unconfident_rows.numel():
        raise ValueError(
            f"A micro-batch holds {confident_rows.numel()} confident and {unconfident_rows.numel()} unconfident "
            "examples; SFTMix pairs them one to one. Use SFTMixTrainer's sampler (do not override "
            "`_get_train_sampler`) and an even `per_device_train_batch_size`."
        )
    return confident_rows, unconfident_rows


def balanced_pair_rows(confident: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs within a micro-batch labelled in its own forward (`training_dynamics`): the first k confident rows with
    the first k unconfident rows, k the size of the smaller group; rows not `valid` (no response token) are in
    neither. The sampler's order is random, so the pairs are too."""
    confident_rows = (confident.bool() & valid.bool()).nonzero().flatten()
    unconfident_rows = (~confident.bool() & valid.bool()).nonzero().flatten()
    k = min(confident_rows.numel(), unconfident_rows.numel())
    return confident_rows[:k], unconfident_rows[:k]


@dataclass
class MixupIndex:
    """Where the mixed positions come from: `(rows_c[i], positions_c[i])` is mixed with
    `(rows_u[i], positions_u[i])` with weight `lambdas[pair[i]]`."""

    rows_c: torch.Tensor
    positions_c: torch.Tensor
    rows_u: torch.Tensor
    positions_u: torch.Tensor
    pair: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.pair.numel())


def mixup_index(
    response_mask: torch.Tensor, rows_c: torch.Tensor, rows_u: torch.Tensor, alignment: str = "response"
) -> MixupIndex:
    """Which positions of each pair are mixed. `response_mask` (batch, seq) marks the (shifted) positions whose
    hidden state predicts a response token; `alignment` 'response' (the first min(N_c, N_u) response positions in
    order) or 'turn' (turn i with turn i, an assistant turn being a run of consecutive response positions), as
    docs/choices.md ("Positions and multi-turn alignment") says."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("rows_c", "positions_c", "rows_u", "positions_u", "pair")}
    for pair, (c, u) in enumerate(zip(rows_c.tolist(), rows_u.tolist(), strict=True)):
        spans_c = _spans(response_mask[c].nonzero().flatten(), alignment)
        spans_u = _spans(response_mask[u].nonzero().flatten(), alignment)
        for pos_c, pos_u in zip(spans_c, spans_u, strict=False):
            n = min(pos_c.numel(), pos_u.numel())
            parts["positions_c"].append(pos_c[:n])
            parts["positions_u"].append(pos_u[:n])
            for key, value in (("rows_c", c), ("rows_u", u), ("pair", pair)):
                parts[key].append(torch.full((n,), value, dtype=torch.long, device=response_mask.device))
    empty = torch.zeros(0, dtype=torch.long, device=response_mask.device)
    return MixupIndex(**{k: torch.cat(v) if v else empty for k, v in parts.items()})


def _spans(positions: torch.Tensor, alignment: str) -> list[torch.Tensor]:
    """The positions as one span ('response') or split into runs of consecutive positions ('turn')."""
    if alignment == "response" or positions.numel() == 0:
        return [positions]
    breaks = (positions.diff() != 1).nonzero().flatten() + 1
    return list(torch.tensor_split(positions, breaks.cpu()))


def mixed_token_count(response_mask: torch.Tensor, confident: torch.Tensor, alignment: str = "response") -> int:
    """Number of mixed positions of an (unshifted) collated batch: the normaliser of the Mixup loss."""
    rows_c, rows_u = pair_rows(confident)
    return mixup_index(response_mask[:, 1:].bool(), rows_c, rows_u, alignment).num_tokens


def sample_lambdas(
    num_pairs: int,
    alpha: float,
    rng: np.random.Generator,
    fixed: float | None = None,
    per_batch: bool = False,
) -> np.ndarray:
    """lambda ~ Beta(alpha, alpha), one per pair (or one shared by the batch), unless `fixed` is given."""
    if fixed is not None:
        return np.full(num_pairs, float(fixed))
    if per_batch:
        return np.full(num_pairs, rng.beta(alpha, alpha))
    return rng.beta(alpha, alpha, size=num_pairs)


def interpolate(z_c: torch.Tensor, z_u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lambda * z_c + (1 - lambda) * z_u, row by row (`lam` has one entry per row).

    Computed in fp32 (lambda is never rounded to bf16) and cast once to the hidden states' dtype."""
    lam = lam.float().unsqueeze(-1)
    return (lam * z_c.float() + (1 - lam) * z_u.float()).to(z_c.dtype)


@dataclass(frozen=True)
class HeadTransform:
    """What a model's LM head does to `hidden @ W.T + b` before the softmax: multiply by `scale`, then soft-cap
    (`softcap * tanh(logits / softcap)`) when `softcap` is set -- the transform TRL's fused NTP head applies."""

    scale: float = 1.0
    softcap: float | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits * self.scale if self.scale != 1.0 else logits
        if self.softcap is not None:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def backward(self, raw_logits: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """d loss / d raw logits from d loss / d transformed logits."""
        if self.softcap is not None:
            grad = grad * (1 - torch.tanh(raw_logits * (self.scale / self.softcap)).square())
        return grad * self.scale if self.scale != 1.0 else grad


# Elements of each transient tile (logits of a token chunk x vocabulary slice, an fp32 copy of a head slice, the
# fp32 gradient of that slice): 2**23 is 32 MiB in fp32, whatever the vocabulary. The default of
# `SFTMixConfig.mixup_tile_elements`; on GPUs larger tiles are faster (fewer, larger GEMMs) at more transient memory
TILE_ELEMENTS = 2**23
# `torch.mm(..., out_dtype=torch.float32)` from bf16/fp16 inputs (CUDA only), as TRL's fused head uses it
_MM_OUT_DTYPE = hasattr(torch.ops.aten.mm, "dtype")


def _vocab_chunk(hidden_size: int, rows: int, tile_elements: int | None = None) -> int:
    return max(256, (tile_elements or TILE_ELEMENTS) // max(hidden_size, rows, 1))


def _product(a: torch.Tensor, b: torch.Tensor, acc_dtype: torch.dtype) -> torch.Tensor:
    """`a @ b` accumulated and returned in `acc_dtype`; `a` is in `acc_dtype`, `b` in the compute dtype.

    On CUDA with bf16/fp16 `b`, `a` is rounded to `b`'s dtype and the GEMM accumulates in fp32 (TRL's fused head
    does the same with its logits gradient); elsewhere `b` is upcast, so fp32 and fp64 stay exact."""
    if _MM_OUT_DTYPE and a.device.type == "cuda" and b.dtype in (torch.float16, torch.bfloat16):
        return torch.mm(a.to(b.dtype), b, out_dtype=torch.float32)
    return a @ b.to(acc_dtype)


class ChunkedMixedCrossEntropy(torch.autograd.Function):
    """The mixed cross-entropy of `head(hidden @ weight.T + bias)` per row, one tile of (`chunk_size` rows x a vocabulary
    slice) at a time.

    As TRL's fused NTP head: no (tokens x vocabulary) logits and no whole-head copy or fp32 buffer. The forward folds
    the tiles into an online logsumexp; the backward recomputes each tile, turns it into the logits gradient (in fp32)
    and accumulates the GEMMs in fp32 (fp64 for fp64 inputs), one vocabulary slice at a time: the head's gradient is
    allocated once, in the head's dtype, and each slice is written once, after its tokens are summed in fp32.

    `gather` is a context-manager factory that makes `weight`/`bias` whole while they are read (DeepSpeed
    ZeRO-3 partitions them outside `lm_head.forward`); it is entered once in forward and once in backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets_c, targets_u, lam, chunk_size, gather, head, tile_elements=None):
        compute_dtype = (
            torch.get_autocast_dtype(hidden.device.type)
            if torch.is_autocast_enabled(hidden.device.type)
            else hidden.dtype
        )
        acc_dtype = torch.promote_types(compute_dtype, torch.float32)
        n_rows = hidden.shape[0]
        running_max = torch.full((n_rows,), float("-inf"), device=hidden.device, dtype=acc_dtype)
        sum_exp = torch.zeros_like(running_max)
        logit_c = torch.zeros_like(running_max)
        logit_u = torch.zeros_like(running_max)
        with gather(weight, bias):
            vocab = weight.shape[0]
            vocab_chunk = _vocab_chunk(weight.shape[1], min(n_rows, chunk_size), tile_elements)
            for start in range(0, n_rows, chunk_size):
                end = min(start + chunk_size, n_rows)
                h = hidden[start:end].to(compute_dtype)
                m, s = running_max[start:end], sum_exp[start:end]
                for v_start in range(0, vocab, vocab_chunk):
                    v_end = min(v_start + vocab_chunk, vocab)
                    b = None if bias is None else bias[v_start:v_end].to(compute_dtype)
                    logits = head(
                        torch.nn.functional.linear(h, weight[v_start:v_end].to(compute_dtype), b).to(acc_dtype)
                    )
                    for targets, out in ((targets_c, logit_c), (targets_u, logit_u)):
                        local = targets[start:end] - v_start
                        inside = (local >= 0) & (local < v_end - v_start)
                        picked = logits.gather(-1, local.clamp(0, v_end - v_start - 1)[:, None]).squeeze(-1)
                        out[start:end] = torch.where(inside, picked, out[start:end])
                    new_m = torch.maximum(m, logits.amax(-1))
                    s.mul_(torch.exp(m - new_m)).add_(logits.sub_(new_m[:, None]).exp_().sum(-1))
                    m.copy_(new_m)
        log_zs = running_max + sum_exp.log()
        lam_acc = lam.to(acc_dtype)
        losses = log_zs - lam_acc * logit_c - (1 - lam_acc) * logit_u
        ctx.save_for_backward(hidden, weight, bias, targets_c, targets_u, lam, log_zs)
        ctx.chunk_size = chunk_size
        ctx.gather = gather
        ctx.compute_dtype = compute_dtype
        ctx.head = head
        ctx.tile_elements = tile_elements
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, bias, targets_c, targets_u, lam, log_zs = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        compute_dtype, chunk_size = ctx.compute_dtype, ctx.chunk_size
        acc_dtype = log_zs.dtype
        n_rows = hidden.shape[0]
        grad_losses = grad_losses.to(acc_dtype)
        lam = lam.to(acc_dtype)
        grad_hidden = torch.zeros(hidden.shape, device=hidden.device, dtype=acc_dtype) if need_hidden else None
        grad_weight = grad_bias = None
        with ctx.gather(weight, bias):
            vocab = weight.shape[0]
            vocab_chunk = _vocab_chunk(weight.shape[1], min(n_rows, chunk_size), ctx.tile_elements)
            if need_weight:  # every row is written once below: no zero fill, no fp32 whole-head buffer
                grad_weight = torch.empty(weight.shape, device=weight.device, dtype=weight.dtype)
            if need_bias:
                grad_bias = torch.empty(bias.shape, device=bias.device, dtype=bias.dtype)
            for v_start in range(0, vocab, vocab_chunk):
                v_end = min(v_start + vocab_chunk, vocab)
                w = weight[v_start:v_end].to(compute_dtype)
                w_acc = w.to(acc_dtype) if need_hidden and w.device.type != "cuda" else w
                b = None if bias is None else bias[v_start:v_end].to(compute_dtype)
                slice_grad_weight = slice_grad_bias = None
                for start in range(0, n_rows, chunk_size):
                    end = min(start + chunk_size, n_rows)
                    h = hidden[start:end].to(compute_dtype)
                    raw_logits = torch.nn.functional.linear(h, w, b).to(acc_dtype)
                    # d loss / d logits = softmax - lambda * onehot(y_c) - (1 - lambda) * onehot(y_u)
                    grad_logits = (ctx.head(raw_logits) - log_zs[start:end, None]).exp_()
                    lam_chunk = lam[start:end]
                    for targets, weight_of in ((targets_c, lam_chunk), (targets_u, 1 - lam_chunk)):
                        local = targets[start:end] - v_start
                        rows = ((local >= 0) & (local < v_end - v_start)).nonzero().flatten()
                        grad_logits[rows, local[rows]] -= weight_of[rows]
                    grad_logits.mul_(grad_losses[start:end, None])
                    grad_logits = ctx.head.backward(raw_logits, grad_logits)
                    del raw_logits
                    if grad_hidden is not None:
                        grad_hidden[start:end] += _product(grad_logits, w_acc, acc_dtype)
                    if grad_weight is not None:
                        part = _product(grad_logits.t(), h, acc_dtype)
                        slice_grad_weight = part if slice_grad_weight is None else slice_grad_weight.add_(part)
                    if grad_bias is not None:
                        part = grad_logits.sum(0)
                        slice_grad_bias = part if slice_grad_bias is None else slice_grad_bias.add_(part)
                if grad_weight is not None:
                    grad_weight[v_start:v_end] = slice_grad_weight
                if grad_bias is not None:
                    grad_bias[v_start:v_end] = slice_grad_bias
        grad_hidden = None if grad_hidden is None else grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, grad_bias, *[None] * 7  # (targets, lambdas and settings have none)


def mixup_loss_sum(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    index: MixupIndex,
    lambdas: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    gather=None,
    head: HeadTransform | None = None,
    tile_elements: int | None = None,
) -> torch.Tensor:
    """Sum over mixed positions of the mixed cross-entropy (the caller divides by the global count).

    `hidden` (batch, seq, d) and `labels` (batch, seq) are shifted: `hidden[:, t]` predicts `labels[:, t]`;
    `labels` holds the target token at every position the index names. `head` is the LM head's logit transform.
    """
    if index.num_tokens == 0:
        return hidden.sum() * 0.0  # keeps the graph connected, so backward still runs on every process
    z_c = hidden[index.rows_c, index.positions_c]
    z_u = hidden[index.rows_u, index.positions_u]
    lam = lambdas.to(hidden.device)[index.pair]
    mixed = interpolate(z_c, z_u, lam)
    targets_c = labels[index.rows_c, index.positions_c]
    targets_u = labels[index.rows_u, index.positions_u]
    gather = gather or (lambda *params: nullcontext())
    per_token = ChunkedMixedCrossEntropy.apply(
        mixed,
        weight,
        bias,
        targets_c,
        targets_u,
        lam,
        chunk_size,
        gather,
        head or HeadTransform(),
        tile_elements,
    )
    return per_token.sum()
