"""The one place sftmix touches TRL internals (they move between releases)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

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


@contextmanager
def without_zero3_init():
    """Load a model whole on one process even inside a DeepSpeed ZeRO-3 launch.

    transformers partitions every model built while a ZeRO-3 config is registered (`zero.Init`), which is a
    collective: a model loaded by the main process alone (evaluation after training) would wait forever for
    the other ranks. The registration is lifted for the duration and restored afterwards.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
