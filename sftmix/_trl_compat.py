"""The one place sftmix touches TRL internals (they move between releases)."""

from __future__ import annotations

from contextlib import nullcontext

try:  # TRL 1.x
    from trl.trainer.utils import maybe_gather_lm_head_ctx as _gather
except ImportError:  # pragma: no cover - older/newer layouts
    _gather = None


def gather_lm_head(*params):
    """Context manager making ZeRO-3-partitioned LM-head parameters whole; a no-op elsewhere."""
    if _gather is None:
        return nullcontext()
    return _gather(*params)


def unwrap_peft(model):
    """The transformers model under a PEFT wrapper (where TRL installs its fused LM head)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) and hasattr(model, "peft_config") else model
