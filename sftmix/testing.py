"""Tiny models and data built on the fly, for tests and examples that must run offline in seconds.

Nothing here is downloaded: the tokenizer is a byte-level BPE trained on a few sentences, the model is a
randomly initialised two-layer Llama, and the chat template is ChatML with `{% generation %}` markers so
that `assistant_only_loss=True` works.
"""

from __future__ import annotations

import random
from pathlib import Path

CHATML_TRAINING_TEMPLATE = (Path(__file__).parent / "templates" / "chatml_training.jinja").read_text()

_WORDS = (
    "the patient has a fever and cough doctor said rest fluids heart blood pressure drug dose daily "
    "what is how do you treat pain sleep water food good bad yes no maybe test result normal high low "
    "I think we should ask about symptoms history allergy infection virus bacteria antibiotic"
).split()


def random_sentence(rng: random.Random, low: int = 3, high: int = 12) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def make_conversations(n: int, seed: int = 0) -> list[dict]:
    """`n` two-turn conversations in the `messages` format, of varied lengths."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": random_sentence(rng)},
                    {"role": "assistant", "content": random_sentence(rng, 2, 20)},
                ]
            }
        )
    return rows


def build_tiny_tokenizer(directory: str | Path | None = None):
    """A byte-level BPE tokenizer (vocab ~300) with ChatML special tokens and a training chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    rng = random.Random(0)
    corpus = [random_sentence(rng) for _ in range(400)] + ["user assistant system\n"]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TRAINING_TEMPLATE
    if directory is not None:
        fast.save_pretrained(directory)
    return fast


def build_tiny_llama(vocab_size: int, seed: int = 0, hidden_size: int = 64, tie: bool = True):
    """A randomly initialised 2-layer Llama; identical for a given seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def build_tiny_model_dir(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny tokenizer and model to `directory` (so it can be loaded by path, as recipes do)."""
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer(directory)
    model = build_tiny_llama(len(tokenizer), seed=seed)
    model.save_pretrained(directory)
    return directory
