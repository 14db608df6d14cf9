"""Compute the Mixup term inside the model's own forward.

TRL patches `model.forward` with a fused LM head (`fused_lm_head=True` returns per-token log-probs).
`install_mixup_forward` wraps that forward once more: when called with `sftmix_confident` and
`sftmix_lambdas`, it captures the backbone's last hidden states during TRL's forward (one backbone pass
serves both terms) and adds the summed Mixup loss to the output. Running inside the forward keeps it
inside the DDP / DeepSpeed engine, so gradients are all-reduced and ZeRO-3 parameters are gathered.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch
from trl.trainer.utils import FusedCausalLMOutput

from sftmix._trl_compat import gather_lm_head
from sftmix.mixup import IGNORE_INDEX, mixup_index, mixup_loss_sum, pair_rows


@dataclass
class SFTMixOutput(FusedCausalLMOutput):
    """TRL's fused output plus the summed Mixup loss and the number of mixed positions (local)."""

    mixup_loss_sum: torch.Tensor | None = None
    mixed_tokens: torch.Tensor | None = None


def install_mixup_forward(model, chunk_size: int) -> None:
    """Wrap `model.forward` (already TRL's fused forward) to also return the Mixup loss on request."""
    fused_forward = model.forward

    # Keep the original signature: `generate` validates its kwargs against it
    @functools.wraps(type(model).forward)
    def forward(self, *args, sftmix_confident=None, sftmix_lambdas=None, **kwargs):
        if sftmix_confident is None:
            return fused_forward(*args, **kwargs)
        captured = {}
        backbone = self.base_model

        def keep_hidden(_module, _inputs, output):
            captured["hidden"] = output.last_hidden_state

        handle = backbone.register_forward_hook(keep_hidden)
        try:
            outputs = fused_forward(*args, **kwargs)
        finally:
            handle.remove()

        lm_head = self.get_output_embeddings()
        labels = kwargs["labels"][:, 1:].to(lm_head.weight.device)
        hidden = captured["hidden"][:, :-1].to(lm_head.weight.device)
        rows_c, rows_u = pair_rows(sftmix_confident)
        index = mixup_index(labels != IGNORE_INDEX, rows_c.to(labels.device), rows_u.to(labels.device))
        loss_sum = mixup_loss_sum(
            hidden,
            labels,
            index,
            sftmix_lambdas,
            lm_head.weight,
            lm_head.bias,
            chunk_size=chunk_size,
            gather=gather_lm_head,
        )
        fields = {name: getattr(outputs, name) for name in FusedCausalLMOutput.__dataclass_fields__}
        return SFTMixOutput(
            **fields,
            mixup_loss_sum=loss_sum,
            mixed_tokens=torch.tensor(index.num_tokens, device=labels.device),
        )

    model.forward = types.MethodType(forward, model)
