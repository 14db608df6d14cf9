"""`SFTMixTrainer`: TRL's `SFTTrainer` with the SFTMix Mixup regulariser, by a few narrow overrides.

- `_get_train_sampler`: micro-batches of k confident + k unconfident examples (`ConfidencePairSampler`).
- `_set_signature_columns_if_needed` and a collator wrapper carry the confidence group to `compute_loss`.
- `get_batch_samples`: counts the mixed positions of the whole optimizer step (all micro-batches, all
  processes), the Mixup loss's normaliser, exactly as the Trainer counts label tokens for NTP.
- `compute_loss`: TRL's NTP loss, through a forward that also returns the summed Mixup loss
  (`sftmix.forward`), plus `mixup_weight` times that sum over the global count of mixed positions.
- With `training_dynamics`, the confidence is recorded from the training forward (`sftmix.training_dynamics`):
  `TrainingDynamicsSampler`, the records saved in every checkpoint and restored on resume, the scores file at
  the end of `train`.
Evaluation is plain NTP.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainingArguments
from trl import SFTTrainer

from sftmix._trl_compat import unwrap_peft
from sftmix.collator import CONFIDENT_KEY, ROW_KEY, ConfidenceCollator
from sftmix.config import SFTMixConfig
from sftmix.forward import install_mixup_forward
from sftmix.mixup import mixed_token_count, pair_rows, sample_lambdas
from sftmix.model_card import SFTMixHubMixin
from sftmix.response import (
    RESPONSE_MASK,
    ResponseMaskMixin,
    assistant_only_loss_for,
    check_marks_assistant,
    data_format,
)
from sftmix.sampler import ConfidencePairSampler, TrainingDynamicsSampler
from sftmix.scores import attach_confidence, dataset_example_ids, default_scores_path
from sftmix.training_dynamics import Recorder, epoch_wise, warmup_steps

logger = logging.getLogger(__name__)

LAMBDAS_KEY = "sftmix_lambdas"
THRESHOLD_KEY = "sftmix_threshold"


class SFTMixTrainer(SFTMixHubMixin, ResponseMaskMixin, SFTTrainer):
    """Drop-in replacement for `trl.SFTTrainer` that trains with SFTMix (NTP + mu * Mixup).

    The train dataset needs a boolean confidence column (`args.confidence_column`), or `args.dynamics_path`
    pointing at the scores file of `sftmix dynamics`, or `args.training_dynamics=True` to record the confidence
    from the training forward itself (no dynamics pass; `sftmix.training_dynamics`). Every other argument is
    `SFTTrainer`'s. Which tokens each term covers: docs/choices.md.
    """

    _tag_names = ["trl", "sft", "sftmix"]
    _name = "SFTMix"

    def __init__(
        self,
        model,
        args: SFTMixConfig | TrainingArguments | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        dynamics=None,
        **kwargs,
    ):
        """`dynamics` (a `sftmix.dynamics.DynamicsConfig`): with `args.training_dynamics`, where and how the recorded
        scores are written (`scores_path`, default <output_dir>/_dynamics/scores.parquet; `plots`, `review_size`)."""
        args = _as_sftmix_config(model, args)
        self._recorder = None
        if args.training_dynamics:
            from sftmix.dynamics import DynamicsConfig
            from sftmix.dynamics.examples import with_row_index
            from sftmix.dynamics.output import marks_of

            _require_map_style(train_dataset, "`training_dynamics`", "it records every example by index")
            self._recorder = Recorder(dataset_example_ids(train_dataset))
            # how the scores are written, checked now rather than after training
            self._dynamics = dataclasses.replace(dynamics or DynamicsConfig(), mode="training")
            self._raw_train = train_dataset
            self._marks = marks_of(train_dataset, self._dynamics.mark_column)
            train_dataset = with_row_index(train_dataset)
        if args.mixup_enabled:  # (its settings were checked when the config was built)
            if kwargs.get("compute_loss_func") is not None:
                raise ValueError(
                    "`compute_loss_func` replaces the loss, which SFTMix defines (NTP + mu * Mixup). Subclass "
                    "SFTMixTrainer instead, or set `mixup_weight=0`."
                )
            if self._recorder is None:
                train_dataset = _with_confidence(train_dataset, args)
            self._response_mask_for = frozenset({"train"})
            self._text_as_response = args.mixup_text_as_response
        elif args.drop_least_confident > 0:  # plain NTP on the examples the scores keep
            train_dataset = attach_confidence(
                train_dataset, args.dynamics_path, args.confidence_column, args.drop_least_confident
            )
        first = next(iter(train_dataset)) if train_dataset is not None and len(train_dataset) > 0 else None
        args.assistant_only_loss = assistant_only_loss_for(args.assistant_only_loss, first)
        # (a `chat_template_path` is applied by SFTTrainer itself; the response pass checks that one)
        if (
            first is not None
            and data_format(first) == "conversation"
            and processing_class is not None
            and not args.chat_template_path
        ):
            check_marks_assistant(processing_class)  # sftmix's error and fix, before TRL's
        super().__init__(model, args, data_collator, train_dataset, eval_dataset, processing_class, **kwargs)

        # (a recording run ignores a confidence column of the data: its groups are recorded)
        self.data_collator = ConfidenceCollator(
            self.data_collator, None if self._recorder is not None else args.confidence_column
        )
        self._num_mixed_in_batch = None
        self._mixup_window = None  # summed Mixup statistics since the last log
        self._lambda_draw = (-1, 0)  # (global step, draws made in it): seeds the lambda generator
        if self._recorder is not None:
            self._rows = np.asarray(self.train_dataset[ROW_KEY], dtype=np.int64)
            self._epoch_wise = None  # decided when training starts (it needs the run's length)
        elif args.mixup_enabled:
            _report_groups(train_dataset, self.train_dataset, args.confidence_column)
        if args.mixup_enabled:
            install_mixup_forward(
                unwrap_peft(self.model), args.mixup_chunk_size, args.mixup_alignment, args.mixup_tile_elements
            )

    # Batching ---------------------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = (
            [RESPONSE_MASK, ROW_KEY] if self._recorder is not None else [self.args.confidence_column, RESPONSE_MASK]
        )
        self._signature_columns = [
            *self._signature_columns,
            *(c for c in extra if c not in self._signature_columns),
        ]

    def _get_train_sampler(self, train_dataset=None):
        if not self.args.mixup_enabled:
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if self._recorder is not None:
            self._sampler = TrainingDynamicsSampler(
                len(dataset), self.args.per_device_train_batch_size, self._split_for_epoch, seed=seed
            )
            return self._sampler
        return ConfidencePairSampler(
            dataset[self.args.confidence_column], self.args.per_device_train_batch_size, seed=seed
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._recorder is not None and batch_samples and ROW_KEY in batch_samples[0]:
            for batch in batch_samples:  # in an epoch of the pair sampler: the groups of its split
                flags = self._split_for_epoch(self._sampler.epoch, batch[ROW_KEY].cpu().numpy())
                if flags is not None:
                    batch[CONFIDENT_KEY] = torch.as_tensor(flags, device=batch[ROW_KEY].device)
        if self.args.mixup_enabled and batch_samples and CONFIDENT_KEY in batch_samples[0]:
            alignment = self.args.mixup_alignment
            count = sum(
                mixed_token_count(batch[RESPONSE_MASK], batch[CONFIDENT_KEY], alignment) for batch in batch_samples
            )
            count = torch.tensor(count, device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                count = self.accelerator.gather(count).sum()
            self._num_mixed_in_batch = count
        return batch_samples, num_items_in_batch

    # Loss -------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        confident = inputs.pop(CONFIDENT_KEY, None)
        response = inputs.pop(RESPONSE_MASK, None)
        rows = inputs.pop(ROW_KEY, None)
        if not (self.args.mixup_enabled and self.model.training):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self._check_finite(result[0] if return_outputs else result)
            return result
        recording = self._recorder is not None
        threshold = self._in_batch_threshold() if recording and confident is None else None
        if response is None or (confident is None and not recording) or (recording and rows is None):
            raise ValueError(
                f"A training batch arrived without confidence groups or response masks. Keep the "
                f"`{self.args.confidence_column}` and `{RESPONSE_MASK}` columns in the train dataset and use "
                "SFTMixTrainer's data collator wrapper."
            )
        captured = {}

        def forward_and_keep(*call_args, **call_kwargs):  # TRL's compute_loss calls model(**inputs, ...)
            captured["outputs"] = model(*call_args, **call_kwargs)
            return captured["outputs"]

        if confident is None and threshold is None:  # the warm-up of `training_dynamics`: plain NTP, recorded
            loss = super().compute_loss(forward_and_keep, inputs, num_items_in_batch=num_items_in_batch)
            self._record(rows, captured["outputs"], response)
            self._check_finite(loss)
            return (loss, captured["outputs"]) if return_outputs else loss

        num_pairs = response.shape[0] // 2 if confident is None else pair_rows(confident)[0].numel()
        lambdas = torch.as_tensor(self._draw_lambdas(num_pairs), dtype=torch.float32, device=response.device)
        inputs[RESPONSE_MASK] = response
        inputs[LAMBDAS_KEY] = lambdas
        if confident is None:
            inputs[THRESHOLD_KEY] = threshold
        else:
            inputs[CONFIDENT_KEY] = confident
        ntp_loss = super().compute_loss(forward_and_keep, inputs, num_items_in_batch=num_items_in_batch)
        outputs = captured["outputs"]
        if confident is None:
            # Labelled in the forward, the step's count of mixed positions is known only after its last micro-batch:
            # a mean per micro-batch, averaged over micro-batches (and, by DDP, over processes)
            mixup_loss = outputs.mixup_loss_sum / outputs.mixed_tokens.clamp(min=1)
            if num_items_in_batch is not None:  # (the Trainer divides by the accumulation steps otherwise)
                mixup_loss = mixup_loss / self.current_gradient_accumulation_steps
        else:
            # With the Trainer's global token count, the matching global count of mixed positions
            use_global = num_items_in_batch is not None and self._num_mixed_in_batch is not None
            mixed = self._num_mixed_in_batch if use_global else outputs.mixed_tokens
            mixup_loss = outputs.mixup_loss_sum / mixed.clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                mixup_loss = mixup_loss * self.accelerator.num_processes  # DDP averages gradients, as for NTP
        loss = ntp_loss + self.args.mixup_weight * mixup_loss
        self._log_mixup(outputs, lambdas)
        if recording:
            self._record(rows, outputs, response)
        self._check_finite(loss)
        return (loss, outputs) if return_outputs else loss

    # Training dynamics ------------------------------------------------------------------------------
    def _is_epoch_wise(self) -> bool:
        if self._epoch_wise is None:
            from sftmix.dynamics.config import optimizer_steps

            per_epoch = optimizer_steps(len(self.train_dataset), self.args, epochs=1.0)
            self._epoch_wise = epoch_wise(self.state.max_steps / per_epoch)
            self._warmup_steps = warmup_steps(self.state.max_steps, self.args.training_dynamics_warmup_ratio)
            logger.info(
                "Training dynamics: %s",
                "plain NTP in the first epoch, then the pair sampler over the median split of the epochs before"
                if self._epoch_wise
                else f"plain NTP for {self._warmup_steps} of {self.state.max_steps} steps, then pairs labelled "
                "in each micro-batch against the recent median",
            )
        return self._epoch_wise

    def _split_for_epoch(self, epoch: int, rows=None):
        """The groups (by raw row; default: every example, in the dataset's order) of an epoch of the pair
        sampler; None in epochs without one."""
        if epoch == 0 or not self._is_epoch_wise():
            return None
        return self._recorder.epoch_split(epoch, self._rows if rows is None else rows)

    def _in_batch_threshold(self) -> float | None:
        """The NLL threshold of this step's in-batch labels; None in the warm-up."""
        step = self.state.global_step
        if self._is_epoch_wise() or step < self._warmup_steps:
            return None
        return self._recorder.threshold(step, self.args.training_dynamics_window or self._warmup_steps)

    def _record(self, rows, outputs, response) -> None:
        """Every example of the micro-batch, from its forward's response log-probabilities, on every process."""
        from sftmix.dynamics.scoring import example_sums

        with torch.no_grad():
            mask = outputs.label_mask.bool() & response[:, 1:].to(outputs.label_mask.device).bool()
            num_tokens, nll_sum, probability_sum = example_sums(outputs.log_probs.detach(), mask)
            when = torch.tensor(
                [self._sampler.epoch, self.state.global_step], dtype=torch.float64, device=nll_sum.device
            ).expand(len(nll_sum), 2)
            stats = torch.cat(
                [when, torch.stack([rows.to(nll_sum), num_tokens, nll_sum, probability_sum], dim=1)], dim=1
            )
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.pad_across_processes(stats, dim=0, pad_index=-1)
                stats = self.accelerator.gather(stats)
            stats = stats.cpu().numpy()
        self._recorder.add(stats[stats[:, 2] >= 0])

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        if self._recorder is not None:
            self._recorder.reset()
            self._epoch_wise = None
            checkpoint = resume_from_checkpoint
            if isinstance(checkpoint, bool):
                from transformers.trainer_utils import get_last_checkpoint

                checkpoint = get_last_checkpoint(self.args.output_dir) if checkpoint else None
            if checkpoint:
                self._recorder.load(checkpoint)
        result = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        if self._recorder is not None:
            self._write_scores()
        return result

    def _save_checkpoint(self, model, trial):
        if self._recorder is not None and self.args.should_save:  # before the Trainer's trainer_state.json
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            directory = Path(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            directory.mkdir(parents=True, exist_ok=True)
            self._recorder.save(directory)
        super()._save_checkpoint(model, trial)

    @property
    def training_dynamics_path(self) -> Path:
        """Where `training_dynamics` writes its scores file."""
        return default_scores_path(self.args.output_dir, self._dynamics.scores_path)

    def _write_scores(self) -> None:
        from sftmix.dynamics.config import data_key
        from sftmix.dynamics.examples import missing_rows
        from sftmix.dynamics.output import write_outputs

        if self.is_world_process_zero():
            per_epoch, labels = self._recorder.scores()
            if per_epoch:
                settings = dataclasses.replace(self._dynamics, scores_path=str(self.training_dynamics_path))
                ids = self._recorder.example_ids
                write_outputs(
                    settings,
                    per_epoch,
                    labels,
                    labels,
                    ids,
                    missing_rows(len(ids), per_epoch[0].row_index),
                    reference_name="the training forward (training_dynamics)",
                    data_key=data_key(ids, self.args, self.processing_class, self.args.mixup_text_as_response),
                    train_dataset=self._raw_train,
                    marks=self._marks,
                )
        self.accelerator.wait_for_everyone()

    def _draw_lambdas(self, num_pairs: int) -> np.ndarray:
        step, draws = self._lambda_draw
        draws = draws + 1 if step == self.state.global_step else 0
        self._lambda_draw = (self.state.global_step, draws)
        rng = np.random.default_rng([self.args.seed, self.args.process_index, self.state.global_step, draws])
        return sample_lambdas(
            num_pairs,
            self.args.mixup_alpha,
            rng,
            fixed=self.args.mixup_lambda,
            per_batch=self.args.mixup_lambda_sampling == "batch",
        )

    def _log_mixup(self, outputs, lambdas):
        with torch.no_grad():
            nll = -outputs.log_probs.detach().float()
            mask = outputs.label_mask
            row_nll, row_tokens = nll.sum(dim=1), mask.sum(dim=1).float()
            conf = outputs.confident.to(row_nll.device)
            stats = torch.stack(
                [
                    outputs.mixup_loss_sum.detach().float(),
                    outputs.mixed_tokens.float(),
                    row_nll.sum(),
                    row_tokens.sum(),
                    row_nll[conf].sum(),
                    row_tokens[conf].sum(),
                    row_nll[~conf].sum(),
                    row_tokens[~conf].sum(),
                    lambdas.sum().to(row_nll.device),
                    torch.tensor(float(lambdas.numel()), device=row_nll.device),
                ]
            )
            stats = self.accelerator.gather(stats).view(-1, stats.numel()).sum(dim=0).cpu()
        # Summed over the logging window, so that the logged means are token-weighted over every micro-batch
        # and process (the same numbers whatever the split into processes and accumulation steps)
        self._mixup_window = stats if self._mixup_window is None else self._mixup_window + stats

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._mixup_window is not None and self.model.training:
            mixup_sum, mixed, ntp_sum, ntp_n, c_sum, c_n, u_sum, u_n, lam_sum, lam_n = self._mixup_window.tolist()
            steps = max(self.state.global_step - self._globalstep_last_logged, 1)
            metrics = self._metrics["train"]
            metrics["mixup_loss"] = [mixup_sum / max(mixed, 1.0)]
            metrics["mixed_tokens"] = [mixed / steps]
            metrics["mixup_lambda"] = [lam_sum / max(lam_n, 1.0)]
            metrics["ntp_loss"] = [ntp_sum / max(ntp_n, 1.0)]
            metrics["ntp_loss_confident"] = [c_sum / max(c_n, 1.0)]
            metrics["ntp_loss_unconfident"] = [u_sum / max(u_n, 1.0)]
            self._mixup_window = None
        super().log(logs, start_time)

    def _check_finite(self, loss):
        """A non-finite loss on any process stops every process at the same step (no rank left waiting in a
        collective): the flag is reduced over the processes on every call."""
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.accelerator.num_processes > 1:
            finite = self.accelerator.reduce(finite, reduction="sum") / self.accelerator.num_processes
        if finite.item() < 1.0:
            where = "this process" if not torch.isfinite(loss.detach()).all() else "another process"
            raise FloatingPointError(
                f"Non-finite training loss at step {self.state.global_step + 1} (on {where}; process "
                f"{self.accelerator.process_index} of {self.accelerator.num_processes}, local loss "
                f"{loss.detach().float().item()}). Every process stops here. Lower the learning rate, check the data "
                "of this step, or use bf16 instead of fp16."
            )


def _as_sftmix_config(model, args) -> SFTMixConfig:
    if isinstance(args, SFTMixConfig):
        return args
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
        return SFTMixConfig(f"{str(name).rstrip('/').split('/')[-1]}-SFTMix")
    # A plain `SFTConfig` or `TrainingArguments`: its values as set (not `to_dict()`, which masks every `*_token`
    # field with a placeholder), SFTMix's defaults for the fields it does not have
    names = {f.name for f in dataclasses.fields(SFTMixConfig) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in names}
    return SFTMixConfig(**values)


def _require_map_style(dataset, who: str, why: str) -> None:
    if not isinstance(dataset, Dataset):  # (an `IterableDataset` is not one)
        raise TypeError(f"{who} needs a map-style `datasets.Dataset` ({why}); got {type(dataset).__name__}.")


def _with_confidence(train_dataset, args: SFTMixConfig):
    """The train dataset with a validated boolean confidence column (from `dynamics_path` if given)."""
    if train_dataset is None:
        raise ValueError("`train_dataset` is required")
    _require_map_style(train_dataset, "SFTMix", "it samples confident and unconfident examples by index")
    column = args.confidence_column
    if args.dynamics_path:
        train_dataset = attach_confidence(train_dataset, args.dynamics_path, column, args.drop_least_confident)
    elif column not in train_dataset.column_names:
        raise ValueError(
            f"No confidence information: the train dataset has no `{column}` column (columns: "
            f"{train_dataset.column_names}) and `dynamics_path` is not set. Run `sftmix dynamics` and set "
            f"`dynamics_path` to its scores file, add a boolean `{column}` column, or set `mixup_weight=0`."
        )
    values = train_dataset[column]
    bad = next((i for i, v in enumerate(values) if not isinstance(v, (bool, np.bool_)) and v not in (0, 1)), None)
    if bad is not None:
        raise ValueError(
            f"Column `{column}` must be boolean (True = confident); row {bad} holds {values[bad]!r}. "
            "Recompute it with `sftmix dynamics`."
        )
    counts = Counter(bool(v) for v in values)
    if counts[True] == 0 or counts[False] == 0:
        raise ValueError(
            f"One confidence group is empty ({counts[True]} confident, {counts[False]} unconfident examples); "
            "SFTMix pairs each confident example with an unconfident one. Check the split of the dynamics pass "
            "(`confident_fraction`) or the data."
        )
    return train_dataset


def _report_groups(raw, prepared, column: str) -> None:
    """Groups after TRL's preparation, which drops examples left with no trainable token."""
    before = Counter(bool(v) for v in raw[column])
    after = Counter(bool(v) for v in prepared[column])
    if after[True] == 0 or after[False] == 0:
        raise ValueError(
            f"After tokenization and truncation, one confidence group is empty ({after[True]} confident, "
            f"{after[False]} unconfident): SFTTrainer drops examples with no trainable token. Raise `max_length` "
            "or check the label masking (`completion_only_loss`, `assistant_only_loss`)."
        )
    dropped = {g: before[g] - after[g] for g in (True, False)}
    if any(dropped.values()):
        logger.warning(
            "SFTTrainer dropped %d confident and %d unconfident examples with no trainable token after truncation; "
            "pairing uses the %d + %d that remain.",
            dropped[True],
            dropped[False],
            after[True],
            after[False],
        )
