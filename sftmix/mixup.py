"""The SFTMix Mixup term as pure functions, top to bottom.

1. `pair_rows`: the i-th confident row of a micro-batch is paired with its i-th unconfident row (the
   sampler shuffles each group, so the pairing is random).
2. `mixup_index`: for each pair, the positions whose hidden state predicts a response token, counted from
   the start of the response (all assistant turns in order) or turn by turn, truncated to the shorter.
3. `interpolate`: z~_t = lambda * z^c_t + (1 - lambda) * z^u_t.
4. `mixed_cross_entropy`: CE of head(z~_t) (`HeadTransform`: the model's logit scaling and soft-capping) against lambda * onehot(y^c_t) + (1 - lambda) * onehot(y^u_t),
   which equals lambda * CE(., y^c_t) + (1 - lambda) * CE(., y^u_t) because CE is linear in the target.
   `ChunkedMixedCrossEntropy` computes it tile by tile, never holding (tokens x vocabulary) logits for more
   than `chunk_size` tokens, and recomputes the tiles in backward (as TRL's fused head does for NTP).

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
    hidden state predicts a response token.

    - `alignment="response"`: the pair's first n = min(N_c, N_u) response positions, in order (the responses of all
      assistant turns form one sequence, the paper's Z of N x d).
    - `alignment="turn"`: the i-th assistant turn (a run of consecutive response positions) of one example with the
      i-th of the other, each pair of turns truncated to the shorter; turns past the shorter conversation are not
      mixed.
    """
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("rows_c", "positions_c", "rows_u", "positions_u", "pair")
    }
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


def mixed_token_count(
    response_mask: torch.Tensor, confident: torch.Tensor, alignment: str = "response"
) -> int:
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


def mixed_cross_entropy(
    logits: torch.Tensor, targets_c: torch.Tensor, targets_u: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """Per-row CE of `logits` against the soft target lambda * onehot(y_c) + (1 - lambda) * onehot(y_u)."""
    logits = logits.float()
    lam = lam.float()
    log_z = torch.logsumexp(logits, dim=-1)
    logit_c = logits.gather(-1, targets_c.unsqueeze(-1)).squeeze(-1)
    logit_u = logits.gather(-1, targets_u.unsqueeze(-1)).squeeze(-1)
    return log_z - lam * logit_c - (1 - lam) * logit_u


class ChunkedMixedCrossEntropy(torch.autograd.Function):
    """`mixed_cross_entropy(hidden @ weight.T + bias, ...)` per row, `chunk_size` rows of logits at a time.

    `gather` is a context-manager factory that makes `weight`/`bias` whole while they are read (DeepSpeed
    ZeRO-3 partitions them outside `lm_head.forward`); it is entered in forward and again in backward,
    which recomputes each tile instead of keeping it.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets_c, targets_u, lam, chunk_size, gather, head):
        compute_dtype = (
            torch.get_autocast_dtype(hidden.device.type)
            if torch.is_autocast_enabled(hidden.device.type)
            else hidden.dtype
        )
        losses = torch.empty(hidden.shape[0], device=hidden.device, dtype=torch.float32)
        log_zs = torch.empty_like(losses)
        with gather(weight, bias):
            w = weight.to(compute_dtype)
            b = None if bias is None else bias.to(compute_dtype)
            for start in range(0, hidden.shape[0], chunk_size):
                end = min(start + chunk_size, hidden.shape[0])
                logits = head(torch.nn.functional.linear(hidden[start:end].to(compute_dtype), w, b).float())
                log_zs[start:end] = torch.logsumexp(logits, dim=-1)
                lam_chunk = lam[start:end].float()
                logit_c = logits.gather(-1, targets_c[start:end, None]).squeeze(-1)
                logit_u = logits.gather(-1, targets_u[start:end, None]).squeeze(-1)
                losses[start:end] = log_zs[start:end] - lam_chunk * logit_c - (1 - lam_chunk) * logit_u
        ctx.save_for_backward(hidden, weight, bias, targets_c, targets_u, lam, log_zs)
        ctx.chunk_size = chunk_size
        ctx.gather = gather
        ctx.compute_dtype = compute_dtype
        ctx.head = head
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, bias, targets_c, targets_u, lam, log_zs = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if need_hidden else None
        grad_bias = None
        with ctx.gather(weight, bias):
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
            if need_bias:
                grad_bias = torch.zeros_like(bias, dtype=torch.float32)
            w = weight.to(ctx.compute_dtype)
            b = None if bias is None else bias.to(ctx.compute_dtype)
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                end = min(start + ctx.chunk_size, hidden.shape[0])
                h = hidden[start:end].to(ctx.compute_dtype)
                raw_logits = torch.nn.functional.linear(h, w, b).float()
                # d loss / d logits = softmax - lambda * onehot(y_c) - (1 - lambda) * onehot(y_u)
                grad_logits = torch.exp(ctx.head(raw_logits) - log_zs[start:end, None])
                rows = torch.arange(end - start, device=hidden.device)
                lam_chunk = lam[start:end].float()
                grad_logits[rows, targets_c[start:end]] -= lam_chunk
                grad_logits[rows, targets_u[start:end]] -= 1 - lam_chunk
                grad_logits *= grad_losses[start:end, None].float()
                grad_logits = ctx.head.backward(raw_logits, grad_logits)
                if grad_hidden is not None:
                    grad_hidden[start:end] = grad_logits @ w.float()
                if grad_weight is not None:
                    grad_weight += grad_logits.t() @ h.float()
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
        cast = lambda g, like: None if g is None else g.to(like.dtype)  # noqa: E731
        return (
            cast(grad_hidden, hidden),
            cast(grad_weight, weight),
            cast(grad_bias, bias) if bias is not None else None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


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
        mixed, weight, bias, targets_c, targets_u, lam, chunk_size, gather, head or HeadTransform()
    )
    return per_token.sum()
