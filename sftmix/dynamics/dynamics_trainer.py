"""`DynamicsTrainer`: TRL's `SFTTrainer` (plain NTP) that can also score its own prepared train dataset.

The same class trains the reference model and scores checkpoints, so both see exactly the examples, tokenization,
chat template, label masking and truncation the SFTMix run will train on. Its preparation also marks each example's
response (`sftmix.response`): the reference run trains on the NTP labels, scoring measures the response.
"""

from __future__ import annotations

import gc
from pathlib import Path

from trl import SFTTrainer

from sftmix._trl_compat import prepare_inference_engine, share_deepspeed_state
from sftmix.dynamics.scoring import CheckpointScores, score_dataset
from sftmix.response import ResponseMaskMixin


class DynamicsTrainer(ResponseMaskMixin, SFTTrainer):
    _tag_names = ["trl", "sft", "sftmix-reference"]
    _response_mask_for = frozenset({"train"})

    def __init__(self, model, args, *more, text_as_response: bool = False, **kwargs):
        share_deepspeed_state(args)
        self._text_as_response = text_as_response
        super().__init__(model, args, *more, **kwargs)
        self._inference_engine = None

    def scoring_model(self):
        """What the scoring forward goes through.

        During or after `train()` under DeepSpeed / FSDP, the training engine (ZeRO-3 gathers the partitioned
        parameters inside it). Without training, an inference engine built like TRL's DPO precompute. Otherwise
        the plain model: a forward without gradients needs no DDP wrapper (and no collective in it).
        """
        if not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            return self.model
        if self.model_wrapped is not self.model:
            return self.model_wrapped
        if self._inference_engine is None:
            self._inference_engine = prepare_inference_engine(self.model, self.accelerator)
        return self._inference_engine

    def score(self, batch_size: int, desc: str = "Scoring") -> CheckpointScores:
        """Every example's response perplexity under the current weights (collective: all processes call it)."""
        return score_dataset(
            self.scoring_model(),
            self.train_dataset,
            accelerator=self.accelerator,
            collator=self.data_collator,
            batch_size=batch_size,
            desc=desc,
            num_workers=self.args.dataloader_num_workers,
            progress_bar=not self.args.disable_tqdm,
        )

    def release(self) -> None:
        """Drop the model and engines so the next checkpoint can be loaded in their place."""
        self._inference_engine = None
        self.model = self.model_wrapped = self.deepspeed = None
        self.optimizer = self.lr_scheduler = None
        self.accelerator.free_memory()
        gc.collect()
        _empty_device_cache()


def checkpoint_model(path: str, base_model=None):
    """What to give `DynamicsTrainer` for a saved checkpoint: its path (loaded by SFTTrainer with
    `model_init_kwargs`), or, for a PEFT adapter directory and an in-memory base model, that base with the adapter."""
    if base_model is not None and (Path(path) / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, path, is_trainable=False)
    return str(path)


def detach_adapter(model) -> None:
    """Remove the adapter `checkpoint_model` put on an in-memory base model, restoring its modules."""
    if hasattr(model, "peft_config") and hasattr(model, "unload"):
        model.unload()


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
