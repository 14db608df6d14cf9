"""The one place sftmix touches TRL, transformers and accelerate internals (they move between releases)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling  # noqa: F401 (SFTTrainer's own padding)
from trl.trainer.utils import FusedCausalLMOutput  # noqa: F401 (what TRL's fused LM head returns)

try:  # TRL 1.x: a context manager making ZeRO-3-partitioned LM-head parameters whole; a no-op elsewhere
    from trl.trainer.utils import maybe_gather_lm_head_ctx as gather_lm_head
except ImportError:  # pragma: no cover - older/newer layouts

    def gather_lm_head(*params):
        return nullcontext()


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


@contextmanager
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


def placeholder_model(vocab_size: int):
    """A one-layer Llama with the tokenizer's vocabulary: SFTTrainer's dataset preparation needs a model object, not
    its weights (sftmix prepares data with TRL's own code rather than a copy of it). Built whole even inside a
    ZeRO-3 launch."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
    )
    with without_zero3_init():
        return LlamaForCausalLM(config)


def complete_checkpoints(output_dir) -> dict[int, Path]:
    """The Trainer's complete checkpoints directly under `output_dir` (`checkpoint-N`, named by transformers'
    `PREFIX_CHECKPOINT_DIR`), by step N, oldest first. `trainer_state.json` is written last, after the weights:
    a checkpoint without it was saved only in part (transformers' `get_last_checkpoint` does not check this)."""
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    found = {}
    for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        if step.isdigit() and (path / TRAINER_STATE_NAME).is_file():
            found[int(step)] = path
    return dict(sorted(found.items()))
