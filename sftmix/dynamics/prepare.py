"""SFTTrainer's own data preparation (tokenize with the chat template, build labels, truncate, drop examples with no
trainable token), run once and reused by every trainer of the pass."""

from __future__ import annotations

import logging

from sftmix.dynamics.data import ROW_INDEX, check_same_examples, same_token_ids
from sftmix.response import RESPONSE_MASK

logger = logging.getLogger(__name__)


def _placeholder_model(vocab_size: int):
    """A one-layer model with the tokenizer's vocabulary: preparation needs a model object, not its weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
    )
    return LlamaForCausalLM(config)


def prepare_examples(indexed_dataset, tokenizer, config, text_as_response: bool = False):
    """`indexed_dataset` (with `ROW_INDEX`) prepared by SFTTrainer under `config` and `tokenizer`, with each example's
    response mask (`RESPONSE_MASK`). Examples with no response token to score (a response truncated away while the
    NTP labels keep the prompt) are left out, like those SFTTrainer drops."""
    from sftmix.dynamics.dynamics_trainer import DynamicsTrainer

    trainer = DynamicsTrainer(
        _placeholder_model(len(tokenizer)),
        config,
        train_dataset=indexed_dataset,
        processing_class=tokenizer,
        text_as_response=text_as_response,
    )
    prepared = trainer.train_dataset
    del trainer
    return prepared.filter(
        lambda example: any(example[RESPONSE_MASK][1:]), desc="Keeping examples with a response"
    )


def check_reference_tokenizer(
    indexed_dataset,
    prepared,
    target_tokenizer,
    reference_tokenizer,
    config,
    example_ids,
    text_as_response=False,
):
    """The reference scores the data with its own tokenizer; if it differs from the target's, it must keep the
    same examples (compared on the data, not just the vocabularies)."""
    if target_tokenizer is None or target_tokenizer is reference_tokenizer:
        return
    prepared_target = prepare_examples(indexed_dataset, target_tokenizer, config, text_as_response)
    if same_token_ids(prepared_target, prepared):
        return
    logger.warning(
        "The reference model's tokenizer tokenizes the training data differently from the target's (vocabulary "
        "sizes %d and %d). Scores come from the reference's tokenization and transfer to the target by example "
        "content, as in the paper's smaller-reference experiment.",
        len(reference_tokenizer),
        len(target_tokenizer),
    )
    check_same_examples(prepared_target[ROW_INDEX], prepared[ROW_INDEX], example_ids)
