"""`compute_dynamics`: stage 1 of SFTMix, from training data to the scores file (docs/dynamics.md). Every process
of a distributed launch runs it; each scores a shard, the main process writes."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import SFTConfig

from sftmix._trl_compat import complete_checkpoints
from sftmix.dynamics import config, examples, output, reference, split
from sftmix.dynamics.config import DynamicsConfig
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
    """Score every training example's confidence and write the scores file; returns its path. The arguments, and
    what becomes of a model object given: docs/dynamics.md (the Python API, at its top)."""
    from sftmix.response import assistant_only_loss_for
    from sftmix.scores import dataset_example_ids

    scores_path = examples.check_inputs(model, train_dataset, args)
    marks = output.marks_of(train_dataset, args.mark_column)
    base = sft_args
    if base is None:  # TRL's defaults, made runnable on a machine without a GPU
        base = SFTConfig(
            str(scores_path.parent / "reference"), use_cpu=not torch.cuda.is_available(), report_to="none"
        )
    if base.packing or base.padding_free:
        raise ValueError(
            "The dynamics pass scores every example on its own, so it cannot run with `packing=True` or "
            "`padding_free=True` (several examples per row). Set both to false (SFTMix needs that anyway)."
        )
    text_as_response = bool(getattr(base, "mixup_text_as_response", False))
    if text_as_response and args.confidence == "ifd":
        raise ValueError(
            "`dynamics.confidence: ifd` compares the response's perplexity with and without its prompt, and "
            "`mixup_text_as_response: true` makes the whole text the response (no prompt): use `confidence: perplexity`."
        )
    if len(train_dataset) > 0:  # `assistant_only_loss=None`: response-only NTP on conversations (on a copy)
        base = config.derive(
            base, assistant_only_loss=assistant_only_loss_for(base.assistant_only_loss, train_dataset[0])
        )
    state = base.distributed_state

    example_ids = dataset_example_ids(train_dataset)
    indexed = examples.with_row_index(train_dataset)
    scoring_args = config.scoring_config(base, output.cache_dir(scores_path))
    target_tokenizer, reference_tokenizer = examples.resolve_tokenizers(model, processing_class, args)

    prepared = reference.prepare_examples(indexed, reference_tokenizer, scoring_args, text_as_response)
    reference.check_reference_tokenizer(
        indexed, prepared, target_tokenizer, reference_tokenizer, scoring_args, example_ids, text_as_response
    )
    kept_rows = prepared[examples.ROW_INDEX]
    excluded_rows = examples.missing_rows(len(indexed), kept_rows)
    if state.is_main_process:
        examples.report_excluded(
            excluded_rows, example_ids, "have no trainable token after tokenization and truncation"
        )
    split.check_splittable(len({example_ids[r] for r in kept_rows}), args.confident_fraction)
    data_key = config.data_key(example_ids, scoring_args, reference_tokenizer, text_as_response)
    if args.split == "random" and not args.checkpoints:  # a seeded permutation: no reference run, no scoring
        if state.is_main_process:
            output.write_random_split(args, example_ids, kept_rows, excluded_rows, data_key, marks)
        state.wait_for_everyone()
        return scores_path

    # A model given by path is loaded by SFTTrainer in the given model's dtype, unless the run's own kwargs say otherwise
    dtype = getattr(model, "dtype", None)
    dtype = str(dtype).removeprefix("torch.") if dtype is not None else "auto"
    load_kwargs = {"dtype": dtype, **(base.model_init_kwargs or {})}
    run = _Pass(args, base, scoring_args, prepared, reference_tokenizer, data_key, load_kwargs)
    if args.checkpoints:
        entries = run.score_given_checkpoints(model)
    else:
        entries = run.reference_run(model, peft_config, restore_model)

    if state.is_main_process:
        output.write_outputs(
            args,
            [e.read() for e in entries],
            [e.label for e in entries],
            [e.path for e in entries],
            example_ids,
            excluded_rows,
            reference_name=run.reference_name,
            data_key=data_key,
            train_dataset=train_dataset,
            marks=marks,
        )
        if not args.checkpoints and not args.keep_reference_checkpoints:
            remove_checkpoints([e.path for e in entries])
    state.wait_for_everyone()
    return scores_path


def remove_checkpoints(paths) -> None:
    """Delete scored reference checkpoints (their scores stay cached); a path already gone is fine."""
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

    def read(self):
        scores = output.read_checkpoint_scores(self.cache_file, self.key)
        if scores is None:
            raise RuntimeError(f"The scores of {self.label} are missing from {self.cache_file}; rerun the pass.")
        return scores


@dataclass
class _Pass:
    args: DynamicsConfig
    base: object
    scoring_config: object
    prepared: object
    reference_tokenizer: object
    data_key: dict
    load_kwargs: dict  # how a model given by path is loaded
    reference_name: str = ""
    scored: list = field(default_factory=list)

    def __post_init__(self):
        self.state = self.base.distributed_state
        self.loading_config = config.derive(self.scoring_config, model_init_kwargs=self.load_kwargs)
        # what the scores hold beyond the paper's: IFD's prompt-free perplexity (a cache without it is rescored)
        self.score_key = {"confidence": "ifd"} if self.args.confidence == "ifd" else {}

    def main_decides(self, decide: Callable[[], object]):
        """`decide()` on the main process, its value broadcast to every process."""
        from accelerate.utils import broadcast_object_list

        value = [decide() if self.state.is_main_process else None]
        if self.state.num_processes > 1:
            broadcast_object_list(value, from_process=0)
        return value[0]

    def reusable(self, find: Callable[[], object]):
        """What the main process finds to reuse of an earlier pass, for every process (None with `overwrite_cache`)."""
        return None if self.args.overwrite_cache else self.main_decides(find)

    def entry(self, index: int, label: str, path, key: dict, **identity) -> _Entry:
        cache = output.cache_file(output.cache_dir(self.args.scores_path), index, label)
        return _Entry(label, str(path), cache, {**key, **self.score_key, **identity})

    def cached(self, entries: list[_Entry]) -> list[bool]:
        """Which entries are scored already: in this pass, or by an earlier one with the same key (the main process
        reads the cache for every process; with `overwrite_cache`, only this pass counts)."""
        read = lambda: [output.read_checkpoint_scores(e.cache_file, e.key) is not None for e in entries]  # noqa: E731
        stored = self.reusable(read) or [False] * len(entries)
        return [done or e.label in self.scored for e, done in zip(entries, stored, strict=True)]

    def score_into_cache(self, trainer, entry: _Entry) -> None:
        """Score with `trainer`'s current weights (every process) and cache the result (main process)."""
        ifd = self.args.confidence == "ifd"
        scores = trainer.score(self.args.scoring_batch_size, desc=f"Scoring {entry.label}", prompt_free=ifd)
        # Every process holds all the scores: all stop together, before a diverged run trains on for hours
        split.check_finite(scores.perplexity, scores.num_tokens, f"{entry.label} ({entry.path})")
        if self.state.is_main_process:
            output.write_checkpoint_scores(entry.cache_file, scores, entry.key)
        self.scored.append(entry.label)
        self.state.wait_for_everyone()

    def score_uncached(self, entries: list[_Entry], base_model=None) -> list[_Entry]:
        """Score the entries not scored yet, each loaded from disk (a model or PEFT adapter directory) and released."""
        for entry, cached in zip(entries, self.cached(entries), strict=True):
            if cached:
                continue
            source = reference.checkpoint_model(entry.path, base_model)
            settings = self.loading_config if isinstance(source, str) else self.scoring_config
            trainer = reference.DynamicsTrainer(
                source, settings, train_dataset=self.prepared, processing_class=self.reference_tokenizer
            )
            try:
                self.score_into_cache(trainer, entry)
            finally:
                trainer.release()
                if not isinstance(source, str):
                    reference.detach_adapter(source)
        return entries

    # Sources -----------------------------------------------------------------------------------------------------
    def score_given_checkpoints(self, model) -> list[_Entry]:
        self.reference_name = self.args.reference_model or "given checkpoints"
        base_model = None if isinstance(model, str) or self.args.reference_model else model
        entries = [
            self.entry(i, Path(path).name or path, path, self.data_key, checkpoint=_identity(path), position=i)
            for i, path in enumerate(self.args.checkpoints)
        ]
        return self.score_uncached(entries, base_model)

    def reference_run(self, model, peft_config, restore_model: bool = True) -> list[_Entry]:
        args = self.args
        output_dir = config.reference_dir(args, args.scores_path)
        source = args.reference_model or model
        training = config.reference_training_config(self.base, output_dir, args, len(self.prepared))
        if isinstance(source, str):
            training.model_init_kwargs = self.load_kwargs
        name = getattr(getattr(source, "config", None), "_name_or_path", "") or type(source).__name__
        self.reference_name = source if isinstance(source, str) else str(name)
        key = self.data_key | config.training_key(training, peft_config, self.reference_name, args.num_checkpoints)
        steps = reference.checkpoint_steps(training.max_steps, args.num_checkpoints)
        labels = [f"{PREFIX_CHECKPOINT_DIR}-{step}" for step in steps]
        entries = [self.entry(i, label, output_dir / label, key, checkpoint=label) for i, label in enumerate(labels)]
        cached = self.cached(entries)

        if all(cached):  # every checkpoint is scored already (it may be deleted): nothing to train
            logger.info("The reference run's checkpoints (steps %s) are scored already: reusing their scores.", steps)
        elif self.reusable(
            lambda: reference.plan_matches(output_dir, key) and set(steps) <= set(complete_checkpoints(output_dir))
        ):
            logger.info("Reusing the reference run's checkpoints in %s (steps %s).", output_dir, steps)
        else:
            # resume from a checkpoint scored before the first unscored one (its steps need not run again)
            resume = self.reusable(lambda: reference.resume_point(output_dir, key, steps[: cached.index(False)]))
            # The caller's model object comes back as it was given (before SFTTrainer patches or wraps it)
            restore = restore_model and not isinstance(source, str)
            with _restoring(source) if restore else nullcontext():
                trainer = reference.DynamicsTrainer(
                    source,
                    training,
                    train_dataset=self.prepared,
                    processing_class=self.reference_tokenizer,
                    peft_config=peft_config,
                )

                def on_checkpoint(step: int) -> None:
                    position = steps.index(step)
                    if not cached[position]:
                        self.score_into_cache(trainer, entries[position])

                trainer.add_callback(reference.CheckpointCallback(steps, key, on_checkpoint))
                try:
                    with reference_tracking(training):
                        trainer.train(resume_from_checkpoint=resume)
                finally:
                    if restore and trainer.model is not None and trainer.model is not source:
                        reference.detach_adapter(trainer.model)  # the PEFT adapter injected into the caller's modules
                    trainer.release()
        # checkpoints on disk whose scoring was interrupted
        return self.score_uncached(entries, None if isinstance(source, str) else source)


@contextmanager
def _restoring(model):
    """Puts back, on exit, what the reference run changes on the caller's model object: its weights copied to CPU
    (not deep-copied on the device) and restored into the same parameter objects (their original dtype, on their
    current device) so references the caller holds stay valid (ZeRO-3 parameters gathered to be written), its
    forward, activation checkpointing, `use_cache` and train mode."""
    training, forward = model.training, model.__dict__.get("forward", _MISSING)
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    use_cache = getattr(getattr(model, "config", None), "use_cache", _MISSING)
    saved = []
    with torch.no_grad():
        for tensor in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values():  # tied weights once
            with _gathered(tensor):  # one parameter at a time: never the whole model on the device
                saved.append((tensor, tensor.detach().to("cpu", copy=True), getattr(tensor, "requires_grad", False)))
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, copy, requires_grad in saved:
                if hasattr(tensor, "ds_id"):  # ZeRO-3: write through the gathered full tensor
                    with _gathered(tensor, modify=True):
                        tensor.data.copy_(copy.to(tensor.device))
                else:  # the original dtype too (k-bit preparation upcasts some weights to fp32)
                    tensor.data = copy.to(tensor.device)
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.requires_grad_(requires_grad)
        if forward is _MISSING:
            model.__dict__.pop("forward", None)  # TRL's fused LM head patches the instance's forward
        else:
            model.__dict__["forward"] = forward
        if checkpointing is False and getattr(model, "is_activation_checkpointing", False):
            model.activation_checkpointing_disable()
        if use_cache is not _MISSING:
            model.config.use_cache = use_cache
        model.train(training)


_MISSING = object()


def _gathered(tensor, modify: bool = False):
    """DeepSpeed ZeRO-3's gather of a partitioned parameter (written back on exit when `modify`), else nothing."""
    if not hasattr(tensor, "ds_id"):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([tensor], modifier_rank=0 if modify else None)


def _identity(path: str) -> dict:
    """A checkpoint's path and last modification, so that a cache is not reused for a rewritten checkpoint."""
    local = Path(path)
    if not local.exists():
        return {"path": path}
    files = [local, *local.iterdir()] if local.is_dir() else [local]
    return {"path": str(local.resolve()), "modified": max(f.stat().st_mtime_ns for f in files)}
