"""The Mixup term computed inside the model's own forward, next to TRL's fused NTP head, from the same backbone
pass; why there, and how the head's logit transform is read and probed: docs/choices.md ("Where the loss is
computed", "Heads that are not a plain projection")."""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch

from sftmix._trl_compat import FusedCausalLMOutput, gather_lm_head
from sftmix.mixup import HeadTransform, balanced_pair_rows, mixup_index, mixup_loss_sum, pair_rows

PROBE_TOKENS = 16


@dataclass
class SFTMixOutput(FusedCausalLMOutput):
    """TRL's fused output plus the summed Mixup loss and the number of mixed positions (local)."""

    mixup_loss_sum: torch.Tensor | None = None
    mixed_tokens: torch.Tensor | None = None
    confident: torch.Tensor | None = None  # the rows' groups (labelled in this forward with `sftmix_threshold`)


def response_nll(log_probs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row (no gradient): the number of `mask`ed positions and their mean NLL (0 for a row without any)."""
    mask = mask.bool()
    tokens = mask.sum(dim=1)
    nll = -log_probs.detach().float().masked_fill(~mask, 0.0).sum(dim=1)
    return tokens, nll / tokens.clamp(min=1)


def head_transform(config) -> HeadTransform:
    """The LM head's logit transform, read from the config the way TRL's fused head reads it
    (`trl.trainer.utils.add_fused_lm_head`): `logit_scale`, else `output_multiplier`, else `lm_head_multiplier`,
    else 1 / `logits_scaling` (x `logits_scaling` for HyperCLOVA X); then `final_logit_softcapping`."""
    text_config = config.get_text_config()
    names = ("logit_scale", "output_multiplier", "lm_head_multiplier")
    scale = next((value for name in names if (value := getattr(text_config, name, None)) is not None), None)
    scaling = getattr(text_config, "logits_scaling", None)
    if scale is None and scaling is not None:
        scale = scaling if text_config.model_type == "hyperclovax" else 1 / scaling
    softcap = getattr(text_config, "final_logit_softcapping", None)
    return HeadTransform(scale=1.0 if scale is None else float(scale), softcap=softcap)


class HeadMismatchError(RuntimeError):
    """The Mixup head does not reproduce the model's own logits."""


def install_mixup_forward(model, chunk_size: int, alignment: str, tile_elements: int) -> None:
    """Wrap `model.forward` (already TRL's fused forward): called with `sftmix_confident` (or `sftmix_threshold`)
    and `sftmix_lambdas`, it also returns the summed Mixup loss, from the backbone's last hidden states."""
    fused_forward = model.forward
    head = head_transform(model.config)
    pending_probe = [True]  # on the first Mixup forward of this process

    # Keep the original signature: `generate` validates its kwargs against it
    @functools.wraps(type(model).forward)
    def forward(
        self,
        *args,
        sftmix_confident=None,
        sftmix_lambdas=None,
        sftmix_response_mask=None,
        sftmix_threshold=None,
        **kwargs,
    ):
        if sftmix_confident is None and sftmix_threshold is None:
            return fused_forward(*args, **kwargs)
        if pending_probe[0]:
            probe_head(self, fused_forward, head, kwargs)
            pending_probe[0] = False
        lm_head = self.get_output_embeddings()
        device = lm_head.weight.device
        response = sftmix_response_mask[:, 1:].to(device).bool()
        mixed = {}

        def mixup_term(last_hidden_state, rows_c, rows_u):
            index = mixup_index(response, rows_c.to(device), rows_u.to(device), alignment)
            mixed["loss_sum"] = mixup_loss_sum(
                last_hidden_state[:, :-1].to(device),
                kwargs["input_ids"][:, 1:].to(device),
                index,
                sftmix_lambdas,
                lm_head.weight,
                lm_head.bias,
                chunk_size=chunk_size,
                gather=gather_lm_head,
                head=head,
                tile_elements=tile_elements,
            )
            mixed["num_tokens"] = index.num_tokens

        def from_hidden(_module, _inputs, output):
            if sftmix_threshold is None:
                # Computed as soon as the backbone's last hidden states exist, before TRL's head builds its part of
                # the graph: autograd then runs TRL's head backward first and frees its buffers before the Mixup head's
                mixup_term(output.last_hidden_state, *pair_rows(sftmix_confident))
            else:
                mixed["hidden"] = output.last_hidden_state

        handle = self.base_model.register_forward_hook(from_hidden)
        try:
            outputs = fused_forward(*args, **kwargs)
        finally:
            handle.remove()
        confident = sftmix_confident
        if sftmix_threshold is not None:  # labelled by this forward's own response NLL, then paired within the batch
            tokens, nll = response_nll(outputs.log_probs, outputs.label_mask & response)
            confident = nll < sftmix_threshold
            mixup_term(mixed.pop("hidden"), *balanced_pair_rows(confident, tokens > 0))
        fields = {name: getattr(outputs, name) for name in FusedCausalLMOutput.__dataclass_fields__}
        return SFTMixOutput(
            **fields,
            mixup_loss_sum=mixed["loss_sum"],
            mixed_tokens=torch.tensor(mixed["num_tokens"], device=device),
            confident=confident,
        )

    model.forward = types.MethodType(forward, model)


@torch.no_grad()
def probe_head(model, fused_forward, head: HeadTransform, kwargs: dict) -> None:
    """The model's own logits on the first `PROBE_TOKENS` positions of one row against the Mixup head's."""
    input_ids = kwargs["input_ids"][:1, :PROBE_TOKENS]
    captured = {}

    def keep_hidden(_module, _inputs, output):
        captured["hidden"] = output.last_hidden_state

    handle = model.base_model.register_forward_hook(keep_hidden)
    try:
        own = fused_forward(input_ids=input_ids, use_cache=False).logits.float()
    finally:
        handle.remove()
    lm_head = model.get_output_embeddings()
    with gather_lm_head(lm_head.weight, lm_head.bias):
        hidden = captured["hidden"].to(lm_head.weight.device)
        weight = lm_head.weight.to(hidden.dtype)
        bias = None if lm_head.bias is None else lm_head.bias.to(hidden.dtype)
        ours = head(torch.nn.functional.linear(hidden, weight, bias).float())
    check_head_logits(own, ours, head, model.config, low_precision=hidden.dtype in (torch.float16, torch.bfloat16))


def check_head_logits(own: torch.Tensor, ours: torch.Tensor, head: HeadTransform, config, low_precision: bool) -> None:
    """Raise `HeadMismatchError` unless `ours` (hidden states through the LM head and `head`) are the model's own
    logits `own`: the one check of the head transform, for training's Mixup head and evaluation's scores alike."""
    own = own.float().to(ours.device)
    if not (torch.isfinite(own).all() and torch.isfinite(ours).all()):
        return  # non-finite weights: the loss check names the step
    tolerance = (3e-2 if low_precision else 1e-4) * (1.0 + own.abs().max().item())
    difference = (ours - own).abs().max().item()
    if not difference <= tolerance:
        raise HeadMismatchError(
            f"sftmix's LM head (the Mixup head, and evaluation's scores) does not reproduce the model's own logits (largest difference {difference:.4g} on "
            f"{own.shape[-2]} probe positions, tolerance {tolerance:.2g}; transform read from the config: "
            f"scale {head.scale}, soft-cap {head.softcap}). The model's LM head applies a transform sftmix does not "
            "know. Set `mixup_weight: 0` to train with plain SFT, or report the model type "
            f"({config.get_text_config().model_type})."
        )
