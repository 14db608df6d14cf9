"""The one place the dynamics pass touches TRL and accelerate internals (they move between releases)."""

from __future__ import annotations

import contextlib

from sftmix._trl_compat import unwrap_peft


@contextlib.contextmanager
def fused_log_probs_head(model):
    """Within the block, `model(..., labels=..., fused_lm_head=True).log_probs` gives per-token log-probs only.

    TRL's fused head projects the valid positions tile by tile, so no batch x seq x vocab logits exist. SFTTrainer
    installs a head that also computes entropy and top-1 accuracy; scoring needs neither, so a lighter head is
    installed over it for the block and the previous forward restored afterwards.
    """
    from trl.trainer.utils import add_fused_lm_head

    target = unwrap_peft(model)
    missing = object()
    previous = target.__dict__.get("forward", missing)
    add_fused_lm_head(target, outputs=("log_probs",))
    try:
        yield
    finally:
        if previous is missing:
            del target.forward
        else:
            target.forward = previous


def prepare_inference_engine(model, accelerator):
    """Wrap a model that is not being trained for DeepSpeed (ZeRO-3 gathers its partitioned parameters) or FSDP."""
    if accelerator.state.deepspeed_plugin is not None:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(model, accelerator)
    if accelerator.state.fsdp_plugin is not None:
        from trl.models.utils import prepare_fsdp

        return prepare_fsdp(model, accelerator)
    return model


def share_deepspeed_state(args) -> None:
    """Let a further Trainer in this process reuse the DeepSpeed setup of the first one.

    accelerate refuses a second `Accelerator` given a DeepSpeed plugin once one exists, and every Trainer passes
    `args.deepspeed_plugin`. The dynamics pass builds several trainers from one run's settings (preparation, the
    reference run, one per saved checkpoint); without a plugin of its own, a Trainer takes the process's.
    """
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if AcceleratorState._shared_state and AcceleratorState().distributed_type == DistributedType.DEEPSPEED:
        args.deepspeed_plugin = None
