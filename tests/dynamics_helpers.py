"""Shared builders for the dynamics tests: tiny data, SFT settings that run on a CPU, saved tiny checkpoints."""

import random
from pathlib import Path

from datasets import Dataset

from sftmix.testing import CHATML_TRAINING_TEMPLATE, build_tiny_llama, make_conversations, random_sentence


def conversations(n=16, seed=0):
    return Dataset.from_list(make_conversations(n, seed=seed))


def sft_config(output_dir, **overrides):
    from helpers import cpu_settings
    from trl import SFTConfig

    return SFTConfig(str(output_dir), **cpu_settings(**{"max_steps": 4, "learning_rate": 1e-3, **overrides}))


def save_checkpoints(directory, tokenizer, seeds=(0, 1)):
    """Tiny models with different random weights saved as checkpoint directories (with the tokenizer)."""
    paths = []
    for seed in seeds:
        path = Path(directory) / f"model-{seed}"
        build_tiny_llama(len(tokenizer), seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(str(path))
    return paths


def byte_level_tokenizer(vocab_size=262):
    """A tokenizer with almost no merges: the same text becomes much longer sequences than with the tiny one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    rng = random.Random(0)
    tok.train_from_iterator([random_sentence(rng) for _ in range(50)], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHATML_TRAINING_TEMPLATE
    return fast
