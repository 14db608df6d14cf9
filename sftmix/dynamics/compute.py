"""`compute_dynamics`: stage 1 of SFTMix, from training data to the scores file.

1. Prepare the examples once, through SFTTrainer (same tokenization, chat template, masking and truncation as the
   SFTMix run); examples left with no trainable token are reported and excluded.
2. Reference run (plain NTP) saving C evenly spaced checkpoints, each scored as it is saved -- or score the given
   `checkpoints`. Per-checkpoint scores are cached next to the output, so an interrupted pass resumes.
3. Confidence = minus the mean perplexity over checkpoints; the top `confident_fraction` is the confident subset.
4. Write the scores file (`sftmix.scores.write_scores`), the data map and the confidence histogram.

Every process of a distributed launch runs this function; each scores a shard, the main process writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from sftmix._trl_compat import complete_checkpoints
from sftmix.dynamics import reference
from sftmix.dynamics.config import (
    DynamicsConfig,
    check_per_example,
    default_sft_config,
    loading_config,
    reference_dir,
    reference_training_config,
    scoring_config,
    tokenization_key,
    training_key,
)
from sftmix.dynamics.examples import (
    ROW_INDEX,
    check_inputs,
    dataset_fingerprint,
    missing_rows,
    report_excluded,
    resolve_tokenizers,
    with_row_index,
)
from sftmix.dynamics.output import (
    cache_dir,
    cache_file,
    marks_of,
    read_checkpoint_scores,
    write_checkpoint_scores,
    write_outputs,
    write_random_split,
    write_review,
)
from sftmix.dynamics.reference import (
    DynamicsTrainer,
    check_reference_tokenizer,
    checkpoint_model,
    detach_adapter,
    prepare_examples,
)
from sftmix.dynamics.split import check_finite, check_splittable
from sftmix.logs import reference_tracking

logger = logging.getLogger(__name__)


def compute_dynamics(
    model,
    train_dataset,
    args: DynamicsConfig,
    processing_class=None,
    sft_args=None,
    peft_config=None,
    *,
    restore_model: bool = True,
) -> Path:
    """Score every training example's confidence and write the scores file; returns its path.

    Args:
        model: the target model (object or path). It is the reference model unless `args.reference_model` is set.
            A model object is left as it was given: its weights (parameters and buffers) are copied to CPU memory
            before the reference run trains it and copied back afterwards, also when the pass fails, so it
            needs CPU memory for one copy of the weights (not a second model on the device); the PEFT adapter,
            gradient checkpointing and forward patch the run puts on it are removed. With `args.checkpoints` it is
            only the base of PEFT adapter checkpoints.
        train_dataset: the SFTMix training data (`datasets.Dataset`, any format SFTTrainer accepts).
        args: the dynamics settings.
        processing_class: the target's tokenizer. Default: loaded from `model` when it is a path.
        sft_args: the SFTMix run's `SFTConfig` / `SFTMixConfig`: tokenization, chat template, masking, `max_length`,
            and the reference run's training settings. Default: TRL's defaults.
        peft_config: PEFT config of the reference run (e.g. the LoRA of the SFTMix run).
        restore_model: put the given model object back as it was after the reference run (default). False skips
            the CPU copy of its weights, for a caller that discards the object (the `sftmix` pipeline reloads the
            model for training): the reference run then trains it in place.
    """
    from accelerate.utils import broadcast_object_list

    from sftmix.response import assistant_only_loss_for
    from sftmix.scores import dataset_example_ids

    scores_path = check_inputs(model, train_dataset, args)
    marks = marks_of(train_dataset, args.mark_column)
    base = sft_args if sft_args is not None else default_sft_config(str(scores_path.parent / "reference"))
    check_per_example(base)
    if len(train_dataset) > 0:  # `assistant_only_loss=None`: response-only NTP on conversations
        base.assistant_only_loss = assistant_only_loss_for(base.assistant_only_loss, train_dataset[0])
    text_as_response = bool(getattr(base, "mixup_text_as_response", False))
    if text_as_response and args.confidence == "ifd":
        raise ValueError(
            "`dynamics.confidence: ifd` compares the response's perplexity with and without its prompt, and "
            "`mixup_text_as_response: true` makes the whole text the response (no prompt): use `confidence: perplexity`."
        )
    state = base.distributed_state

    example_ids = dataset_example_ids(train_dataset)
    indexed = with_row_index(train_dataset)
    load_kwargs = {"dtype": _dtype_of(model)}
    scoring_args = scoring_config(base, cache_dir(scores_path))
    target_tokenizer, reference_tokenizer = resolve_tokenizers(model, processing_class, args)

    prepared = prepare_examples(indexed, reference_tokenizer, scoring_args, text_as_response)
    check_reference_tokenizer(
        indexed, prepared, target_tokenizer, reference_tokenizer, scoring_args, example_ids, text_as_response
    )
    kept_rows = prepared[ROW_INDEX]
    excluded_rows = missing_rows(len(indexed), kept_rows)
    if state.is_main_process:
        report_excluded(
            excluded_rows, example_ids, "have no trainable token after tokenization and truncation"
        )
    check_splittable(len({example_ids[r] for r in kept_rows}), args.confident_fraction)
    data_key = {
        "data": dataset_fingerprint(example_ids),
        **tokenization_key(scoring_args, reference_tokenizer, text_as_response),
    }
    if args.split == "random" and not args.checkpoints:  # a seeded permutation: no reference run, no scoring
        if state.is_main_process:
            write_random_split(args, example_ids, kept_rows, excluded_rows, data_key, marks)
        state.wait_for_everyone()
        return scores_path

    def main_decides(decide: Callable[[], object]):
        value = [decide() if state.is_main_process else None]
        if state.num_processes > 1:
            broadcast_object_list(value, from_process=0)
        return value[0]

    run = _Pass(
        args=args,
        scores_path=scores_path,
        base=base,
        scoring_config=scoring_args,
        loading_config=loading_config(scoring_args, base, load_kwargs),
        load_kwargs=load_kwargs,
        prepared=prepared,
        reference_tokenizer=reference_tokenizer,
        data_key=data_key,
        state=state,
        main_decides=main_decides,
    )
    if args.checkpoints:
        entries = run.score_given_checkpoints(model)
    else:
        entries = run.reference_run(model, peft_config, restore_model)

    if state.is_main_process:
        write_outputs(
            args,
            [read_entry(e) for e in entries],
            [e.label for e in entries],
            [e.path for e in entries],
            example_ids,
            excluded_rows,
            reference_name=run.reference_name,
            data_key=run.data_key,
            marks=marks,
        )
        write_review(scores_path, train_dataset, args.review_size, args.mark_column)
        if not args.checkpoints and not args.keep_reference_checkpoints:
            remove_checkpoints([e.path for e in entries])
    state.wait_for_everyone()
    return scores_path


def remove_checkpoints(paths) -> None:
    """Delete scored reference checkpoints (their scores stay cached); a path already gone is fine."""
    import shutil

    removed = [p for p in paths if Path(p).is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        logger.info(
            "Deleted the %d scored reference checkpoint(s) (`keep_reference_checkpoints: true` keeps them).",
            len(removed),
        )


@dataclass
class _Entry:
    """One scored checkpoint: where its cached scores are and the key they were made under."""

    label: str
    path: str
    cache_file: Path
    key: dict


@dataclass
class _Pass:
    args: DynamicsConfig
    scores_path: Path
    base: object
    scoring_config: object
    loading_config: object
    load_kwargs: dict
    prepared: object
    reference_tokenizer: object
    data_key: dict
    state: object
    main_decides: Callable
    reference_name: str = ""
    scored: list = field(default_factory=list)

    # Cache -------------------------------------------------------------------------------------------------------
    @property
    def score_key(self) -> dict:
        """What the scores hold beyond the paper's: IFD's prompt-free perplexity (a cache without it is rescored)."""
        return {"confidence": "ifd"} if self.args.confidence == "ifd" else {}

    def is_cached(self, entry: _Entry, collective: bool = True) -> bool:
        """Whether `entry`'s scores are cached: decided by the main process for all (`collective`, every process
        calls it), or read here (`collective=False`: inside a decision the main process makes alone)."""
        if self.args.overwrite_cache and entry.label not in self.scored:
            return False
        cached = lambda: read_checkpoint_scores(entry.cache_file, entry.key) is not None  # noqa: E731
        return bool(self.main_decides(cached) if collective else cached())

    def score_into_cache(self, trainer, entry: _Entry) -> None:
        """Score with `trainer`'s current weights (every process) and cache the result (main process)."""
        scores = trainer.score(
            self.args.scoring_batch_size,
            desc=f"Scoring {entry.label}",
            prompt_free=self.args.confidence == "ifd",
        )
        # Every process holds all the scores: all stop together, before a diverged run trains on for hours
        check_finite(scores.perplexity, scores.num_tokens, f"{entry.label} ({entry.path})")
        if self.state.is_main_process:
            write_checkpoint_scores(entry.cache_file, scores, entry.key)
        self.scored.append(entry.label)
        self.state.wait_for_everyone()

    def score_saved(self, entry: _Entry, base_model=None) -> None:
        """Load a saved checkpoint (model or PEFT adapter directory), score it, release it."""
        source = checkpoint_model(entry.path, base_model)
        config = self.loading_config if isinstance(source, str) else self.scoring_config
        trainer = DynamicsTrainer(
            source, config, train_dataset=self.prepared, processing_class=self.reference_tokenizer
        )
        try:
            self.score_into_cache(trainer, entry)
        finally:
            trainer.release()
            if not isinstance(source, str):
                detach_adapter(source)

    # Sources -----------------------------------------------------------------------------------------------------
    def score_given_checkpoints(self, model) -> list[_Entry]:
        self.reference_name = self.args.reference_model or "given checkpoints"
        base_model = None if isinstance(model, str) or self.args.reference_model else model
        entries = []
        for position, path in enumerate(self.args.checkpoints):
            name = Path(path).name or path
            entry = _Entry(
                label=name,
                path=path,
                cache_file=cache_file(cache_dir(self.scores_path), position, name),
                key={**self.data_key, **self.score_key, "checkpoint": _identity(path), "position": position},
            )
            if not self.is_cached(entry):
                self.score_saved(entry, base_model)
            entries.append(entry)
        return entries

    def reference_run(self, model, peft_config, restore_model: bool = True) -> list[_Entry]:
        args = self.args
        output_dir = reference_dir(args, self.scores_path)
        source = args.reference_model or model
        config = reference_training_config(self.base, output_dir, args, len(self.prepared))
        if isinstance(source, str):
            config.model_init_kwargs = {**self.load_kwargs, **(config.model_init_kwargs or {})}
        self.reference_name = _model_name(source)
        num_checkpoints = args.num_checkpoints
        key = {
            **self.data_key,
            **training_key(config, peft_config, self.reference_name, num_checkpoints),
        }

        def entry(position: int, step: int) -> _Entry:
            label = f"{PREFIX_CHECKPOINT_DIR}-{step}"
            return _Entry(
                label=label,
                path=str(output_dir / label),
                cache_file=cache_file(cache_dir(self.scores_path), position, label),
                key={**key, **self.score_key, "checkpoint": label},
            )

        def cached_step(step: int, collective: bool = True) -> bool:
            plan = reference.read_plan(output_dir) or {"steps": []}
            return step in plan["steps"] and self.is_cached(
                entry(plan["steps"].index(step), step), collective
            )

        planned = (
            None
            if args.overwrite_cache
            else self.main_decides(lambda: reference.planned_steps(output_dir, key))
        )
        complete = self.main_decides(lambda: list(complete_checkpoints(output_dir))) if planned else []
        if planned and all(cached_step(step) for step in planned):
            # every planned checkpoint is scored already (its checkpoint may be deleted): nothing to train
            steps = planned
            logger.info(
                "The reference run's checkpoints (steps %s) are scored already: reusing their scores.", steps
            )
        elif planned and set(planned) <= set(complete):
            steps = planned
            logger.info("Reusing the reference run's checkpoints in %s (steps %s).", output_dir, steps)
        else:
            resume = (
                None
                if args.overwrite_cache
                else self.main_decides(
                    lambda: reference.resume_point(output_dir, key, lambda step: cached_step(step, False))
                )
            )
            # The caller's model object comes back as it was given (before SFTTrainer patches or wraps it)
            snapshot = _Snapshot(source) if restore_model and not isinstance(source, str) else None
            trainer = None
            try:
                trainer = DynamicsTrainer(
                    source,
                    config,
                    train_dataset=self.prepared,
                    processing_class=self.reference_tokenizer,
                    peft_config=peft_config,
                )
                callback = reference.CheckpointCallback(
                    num_checkpoints,
                    key,
                    lambda step, _path: self._score_live(trainer, entry(callback.steps.index(step), step)),
                    self.state.is_main_process,
                )
                trainer.add_callback(callback)
                with reference_tracking(config):
                    trainer.train(resume_from_checkpoint=resume)
                steps = callback.steps
            finally:
                if trainer is not None:
                    if snapshot is not None and trainer.model is not None and trainer.model is not source:
                        detach_adapter(trainer.model)  # the PEFT adapter injected into the caller's modules
                    trainer.release()
                if snapshot is not None:
                    snapshot.restore()

        entries = [entry(position, step) for position, step in enumerate(steps)]
        for item in entries:  # checkpoints on disk whose scoring was interrupted
            if not self.is_cached(item):
                self.score_saved(item, None if isinstance(source, str) else source)
        return entries

    def _score_live(self, trainer, entry: _Entry) -> None:
        if not self.is_cached(entry):
            self.score_into_cache(trainer, entry)


class _Snapshot:
    """The state of the caller's model object that the reference run changes, kept to put back afterwards.

    Weights are copied to CPU (one copy; tied weights once), not deep-copied on the device. Restored into the same
    parameter objects (their original dtype, on the device they are on now), so references the caller holds stay
    valid. Under DeepSpeed ZeRO-3 the partitioned parameters are gathered to be written.
    """

    def __init__(self, model):
        import torch

        self.model = model
        self.training = model.training
        self.forward = model.__dict__.get("forward", _MISSING)
        self.checkpointing = getattr(model, "is_gradient_checkpointing", None)
        config = getattr(model, "config", None)
        self.use_cache = getattr(config, "use_cache", _MISSING)
        self.tensors = []
        seen = set()
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                with _gathered([tensor]):  # one parameter at a time: never the whole model on the device
                    saved = tensor.detach().to("cpu", copy=True)
                self.tensors.append((tensor, saved, getattr(tensor, "requires_grad", False)))

    def restore(self) -> None:
        import torch

        model = self.model
        with torch.no_grad():
            for tensor, saved, requires_grad in self.tensors:
                if hasattr(tensor, "ds_id"):  # ZeRO-3: write through the gathered full tensor
                    with _gathered([tensor], modify=True):
                        tensor.data.copy_(saved.to(tensor.device))
                else:  # the original dtype too (k-bit preparation upcasts some weights to fp32)
                    tensor.data = saved.to(tensor.device)
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.requires_grad_(requires_grad)
        if self.forward is _MISSING:
            model.__dict__.pop("forward", None)  # TRL's fused LM head patches the instance's forward
        else:
            model.__dict__["forward"] = self.forward
        if self.checkpointing is False and getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()
        if self.use_cache is not _MISSING:
            model.config.use_cache = self.use_cache
        model.train(self.training)
        self.tensors = []


_MISSING = object()


def _gathered(params, modify: bool = False):
    """DeepSpeed ZeRO-3's gather of partitioned parameters (written back on exit when `modify`), else nothing."""
    from contextlib import nullcontext

    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if modify else None)


def read_entry(entry: _Entry):
    scores = read_checkpoint_scores(entry.cache_file, entry.key)
    if scores is None:
        raise RuntimeError(
            f"The scores of {entry.label} are missing from {entry.cache_file}; rerun the pass."
        )
    return scores


def _dtype_of(model) -> str:
    dtype = getattr(model, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "auto"


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def _identity(path: str) -> dict:
    """A checkpoint's path and last modification, so that a cache is not reused for a rewritten checkpoint."""
    local = Path(path)
    if not local.exists():
        return {"path": path}
    files = [local, *local.iterdir()] if local.is_dir() else [local]
    return {"path": str(local.resolve()), "modified": max(f.stat().st_mtime_ns for f in files)}
