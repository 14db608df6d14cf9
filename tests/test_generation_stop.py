"""A model trained by a recipe stops generating at its chat template's turn end (`<|im_end|>` for ChatML), also when
the base tokenizer knows that marker only as plain text (base Llama / Mistral with the paper's ChatML recipes)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from trl import ModelConfig

from sftmix.modeling import load_model_and_tokenizer, turn_end_marker
from sftmix.testing import build_tiny_llama, build_tiny_tokenizer
from tests.helpers import conversations, cpu_args

TEMPLATE = Path(__file__).parents[1] / "sftmix" / "templates" / "chatml_training.jinja"
MARKER = "<|im_end|>"


def base_tokenizer_without_the_marker():
    """The tiny BPE tokenizer as a base model's: `<|im_end|>` is not a token, EOS is `<|endoftext|>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["the patient has a fever", "user assistant system\n"] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token=None)


def model_dir(tmp_path, tokenizer) -> Path:
    directory = tmp_path / "base"
    tokenizer.save_pretrained(directory)
    build_tiny_llama(len(tokenizer)).save_pretrained(directory)
    return directory


class FavourAfter(LogitsProcessor):
    """Logits that favour `token_id` from the `step`-th generated token on."""

    def __init__(self, prompt_length, token_id, step=2):
        self.prompt_length, self.token_id, self.step = prompt_length, token_id, step

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length >= self.step:
            scores[:, self.token_id] += 1e4
        return scores


def assert_generation_stops_at_the_turn_end(directory):
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    (turn_end,) = tokenizer.encode(MARKER, add_special_tokens=False)
    assert tokenizer.eos_token == MARKER
    assert turn_end in model.generation_config.eos_token_id
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "the patient has a fever"}],
        add_generation_prompt=True,
        return_tensors="pt",
    )
    prompt = prompt["input_ids"] if not torch.is_tensor(prompt) else prompt
    favour = FavourAfter(prompt.shape[1], turn_end, step=2)
    out = model.generate(prompt, max_new_tokens=20, do_sample=False, logits_processor=LogitsProcessorList([favour]))
    generated = out[0, prompt.shape[1] :].tolist()
    assert generated[-1] == turn_end and len(generated) == 3, generated  # stopped right after it


def train_and_save(tmp_path, directory, **overrides):
    from sftmix.trainer import SFTMixTrainer

    args = cpu_args(tmp_path / "out", chat_template_path=str(TEMPLATE), mixup_weight=0.0, **overrides)
    model, tokenizer, peft_config = load_model_and_tokenizer(ModelConfig(model_name_or_path=str(directory)), args)
    trainer = SFTMixTrainer(
        model, args, train_dataset=conversations(8), processing_class=tokenizer, peft_config=peft_config
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    return Path(args.output_dir), tokenizer, model


def test_the_turn_end_of_the_chatml_template_is_found(tiny_tokenizer):
    assert turn_end_marker(tiny_tokenizer, TEMPLATE.read_text()) == MARKER
    assert turn_end_marker(tiny_tokenizer, None) is None


def test_a_plain_text_turn_end_is_registered_as_a_special_token_and_generation_stops_there(tmp_path):
    base = base_tokenizer_without_the_marker()
    assert len(base.encode(MARKER, add_special_tokens=False)) > 1
    out, tokenizer, model = train_and_save(tmp_path, model_dir(tmp_path, base))
    turn_end = tokenizer.convert_tokens_to_ids(MARKER)
    assert turn_end == len(base)  # one new token
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0
    assert tokenizer.pad_token == "<|endoftext|>"  # padding unchanged: the base EOS, as SFTTrainer would pick
    assert model.generation_config.eos_token_id == [
        turn_end,
        2,
    ]  # before the base model's EOS (2: LlamaConfig's)
    # Trained as one token: the labels of a response end with it
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], tokenize=False
    )
    assert tokenizer(rendered)["input_ids"].count(turn_end) == 2
    assert_generation_stops_at_the_turn_end(out)


def test_a_turn_end_that_is_already_a_token_only_becomes_the_eos(tmp_path):
    tokenizer = build_tiny_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"  # as base models ship it
    size = len(tokenizer)
    out, tokenizer, model = train_and_save(tmp_path, model_dir(tmp_path, tokenizer))
    assert len(tokenizer) == size and model.get_input_embeddings().weight.shape[0] == size
    assert_generation_stops_at_the_turn_end(out)


def test_with_lora_the_added_token_is_trained(tmp_path):
    pytest.importorskip("peft")
    from sftmix.modeling import train_added_tokens

    model = build_tiny_llama(300, tie=False)
    from peft import LoraConfig

    config = LoraConfig(target_modules=["q_proj"])
    train_added_tokens(model, config, [300])
    assert config.trainable_token_indices == {"embed_tokens": [300], "lm_head": [300]}
