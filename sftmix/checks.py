"""Everything a recipe names, checked before any forward pass; all problems reported together.

`sftmix run`, `dynamics` and `train` call `check_recipe` first (sftmix.pipeline); `collect_problems` returns the
list without raising, one line per problem naming the file, line or key and the fix. Value types are checked when
the recipe is read (sftmix.recipe.coerce_settings).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# owner/name (or a bare name): what `from_pretrained` would look up on the Hub when no such path exists
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
TEMPLATES_DIR = Path(__file__).parent / "templates"

_checked_data: dict[str, tuple] = {}  # data read and checked in this process -> (train, held-out or None)


class RecipeProblems(ValueError):
    """Every problem found in a recipe before any work; `problems` holds one line each."""

    def __init__(self, problems: list[str], recipe_path=None):
        self.problems = list(problems)
        where = f"The recipe {recipe_path}" if recipe_path else "The recipe"
        listed = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{where} has {len(self.problems)} problem(s); nothing was run. Fix them all and rerun:\n{listed}"
        )


def check_recipe(recipe) -> None:
    """Raise `RecipeProblems` listing everything wrong with `recipe`; return quietly if nothing is."""
    problems = collect_problems(recipe)
    if problems:
        raise RecipeProblems(problems, getattr(recipe, "path", None))


def collect_problems(recipe) -> list[str]:
    """Every problem of a parsed recipe (`sftmix.recipe.Recipe`), without raising; [] when it can run."""
    from sftmix.data import set_error_excerpts

    set_error_excerpts(recipe.data.error_excerpts)
    problems = [] if recipe.model.model_name_or_path else ["The recipe names no model: set `model_name_or_path`."]
    held_out = None
    data_problems = recipe.data.source_problems()
    if not data_problems:
        data_problems, held_out = data_problems_and_held_out(recipe.data, recipe.dynamics)
    problems += data_problems + model_problems(recipe)
    if recipe.evaluation is not None:
        problems += evaluation_problems(recipe.evaluation, held_out)
    if recipe.training.dynamics_path:
        from sftmix.scores import read_scores

        try:
            read_scores(recipe.training.dynamics_path)
        except Exception as error:
            problems.append(f"`dynamics_path`: {error}")
    problems += output_problems(recipe)
    problems += extras_problems(recipe)
    return problems


def extras_problems(recipe) -> list[str]:
    """Optional dependencies a recipe needs (pip extras named as TRL names them)."""
    import importlib.util

    needs = []
    model, training = recipe.model, recipe.training
    if getattr(model, "load_in_4bit", False) or getattr(model, "load_in_8bit", False):
        needs.append(("bitsandbytes", "quantization", "`load_in_4bit` / `load_in_8bit`"))
    deepspeed_launch = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    if getattr(training, "deepspeed", None) or deepspeed_launch:
        needs.append(("deepspeed", "deepspeed", "a DeepSpeed config"))
    return [
        f"The recipe uses {why}, which needs `{module}`: `pip install 'sftmix[{extra}]'`."
        for module, extra, why in needs
        if importlib.util.find_spec(module) is None
    ]


def data_problems_and_held_out(data, dynamics=None) -> tuple[list[str], bool | None]:
    """Load and check every row (`checked_data`): (problems, whether a held-out split exists or None)."""
    try:
        _, held_out = checked_data(data, dynamics)
    except Exception as error:  # a `DataError` lists every bad row; else a Hub dataset or loader error
        return getattr(error, "problems", None) or [f"Data: {error}"], None
    return [], held_out is not None


def checked_data(data, dynamics=None):
    """`sftmix.data.load_sft_data` keeping the dynamics' columns (the confidence column and `mark_column`), read
    and checked once per process for the same settings and unchanged files: the check and every stage share it."""
    from sftmix.data import load_sft_data

    data.check_sources()
    mark = getattr(dynamics, "mark_column", None)
    kept = ("confident", *([mark] if mark else []))
    key = repr((data, kept, [(os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in data.dataset_files or []]))
    if key not in _checked_data:
        _checked_data[key] = load_sft_data(data, kept)
    return _checked_data[key]


def evaluation_problems(evaluation, held_out: bool | None) -> list[str]:
    """Parse every local evaluation file completely (Hub benchmarks are loaded when evaluation runs)."""
    from sftmix.evaluation.benchmarks import is_hub_source, load_benchmark
    from sftmix.evaluation.heldout import load_heldout
    from sftmix.evaluation.lm_eval_tasks import require_lm_eval

    problems, sources, ids = [], evaluation.benchmark_sources(), evaluation.pubmedqa_ids
    if sources:
        try:
            require_lm_eval()
        except ImportError as error:
            problems.append(f"`evaluation`: {error}")
    if problem := evaluation.target_problem(held_out=held_out is not False, prefix="evaluation."):
        problems.append(problem)
    if evaluation.heldout:
        try:
            load_heldout(evaluation.heldout, evaluation.heldout_format)
        except Exception as error:  # a `DataError` lists every bad row
            problems += [f"`evaluation.heldout`: {p}" for p in getattr(error, "problems", [error])]
    if ids and not Path(ids).is_file():
        problems.append(f"`evaluation.pubmedqa_ids`: {ids} does not exist. Fix the path.")
        ids = None
    for name, source in sources.items():
        if is_hub_source(source) and not Path(source).is_file():
            continue
        try:
            load_benchmark(
                name,
                source,
                medmcqa_answer_base=evaluation.medmcqa_answer_base,
                pubmedqa_ids=ids if name == "pubmedqa" else None,
            )
        except Exception as error:
            problems.append(f"`evaluation.{name}`: {error}")
    if evaluation.chat_template_path:
        problems += template_problems(evaluation.chat_template_path, "evaluation.chat_template_path")
    return problems


def model_problems(recipe) -> list[str]:
    revision = getattr(recipe.model, "model_revision", None)
    problems = []
    if recipe.model.model_name_or_path:
        problems += path_or_hub_problems(recipe.model.model_name_or_path, "model_name_or_path", revision=revision)
    template = getattr(recipe.training, "chat_template_path", None)
    if template:
        problems += template_problems(template, "chat_template_path")
    dynamics = recipe.dynamics
    if dynamics is not None:
        if dynamics.reference_model:
            problems += path_or_hub_problems(dynamics.reference_model, "dynamics.reference_model")
        for checkpoint in dynamics.checkpoints or []:
            problems += path_or_hub_problems(checkpoint, "dynamics.checkpoints", tokenizer=False)
    return problems


def path_or_hub_problems(name: str, key: str, *, tokenizer: bool = True, revision=None) -> list[str]:
    """A model named by a local folder, a built-in name or a Hub id: what would stop it from loading."""
    from sftmix.quickstart.smollm2 import BUILTIN_MODEL, BUILTIN_MODEL_PREFIX, gguf_path

    if name.startswith(BUILTIN_MODEL_PREFIX) and not Path(name).exists():
        if name.rstrip("/") != BUILTIN_MODEL:
            return [f"`{key}`: unknown built-in model {name!r}; the built-in one is {BUILTIN_MODEL!r}."]
        try:
            gguf_path()
        except (ImportError, OSError) as error:
            return [f"`{key}`: {error}"]
        return []
    path = Path(name).expanduser()
    if path.is_dir():
        if not (missing := missing_model_files(path, tokenizer=tokenizer)):
            return []
        return [
            f"`{key}`: {path} is not a saved model: it has no {', no '.join(missing)}. Point it at a folder written "
            "by `save_pretrained` (or a Hub id)."
        ]
    if path.exists():
        return [f"`{key}`: {name} is a file, not a model folder (config.json, weights and tokenizer files)."]
    if not _looks_like_hub_id(name):
        return [f"`{key}`: {name} does not exist (cwd {os.getcwd()}). Fix the path."]
    if not hub_id_loadable(name, revision=revision):
        return [
            f"`{key}`: {name} is neither a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is "
            "set. Download it where the Hub is reachable (`hf download ...`), or fix the path."
        ]
    return []


def missing_model_files(path: Path, *, tokenizer: bool = True) -> list[str]:
    """What the folder `path` lacks to be a saved model or PEFT adapter (an adapter's tokenizer is optional)."""
    missing = []
    adapter = (path / "adapter_config.json").is_file()
    if not adapter and not (path / "config.json").is_file():
        missing.append("config.json (or adapter_config.json for a PEFT adapter)")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or *.bin)")
    if tokenizer and not adapter and not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(f"tokenizer files ({' / '.join(TOKENIZER_FILES)})")
    return missing


def template_problems(template: str, key: str) -> list[str]:
    """A chat template: a Jinja file, a tokenizer folder, or a Hub tokenizer id."""
    path = Path(template).expanduser()
    if path.is_file():
        return []
    if path.is_dir():
        if any((path / f).is_file() for f in TOKENIZER_FILES + ("chat_template.jinja",)):
            return []
        return [f"`{key}`: {template} is a folder without tokenizer files; name a .jinja template file."]
    if _looks_like_hub_id(template) and not template.endswith((".jinja", ".j2")):
        if not hub_id_loadable(template, ("tokenizer_config.json",)):
            return [f"`{key}`: {template} is neither a file nor in the Hugging Face cache (HF_HUB_OFFLINE is set)."]
        return []
    packaged = TEMPLATES_DIR / path.name
    hint = f" The packaged template is at {packaged}." if packaged.is_file() else ""
    return [f"`{key}`: the template {template} does not exist (cwd {os.getcwd()}). Fix the path.{hint}"]


def output_problems(recipe) -> list[str]:
    """Write access to every directory the run writes to (probe file in it or its nearest existing parent)."""
    targets = {"output_dir": recipe.training.output_dir}
    if recipe.dynamics is not None:
        if recipe.dynamics.scores_path:
            targets["dynamics.scores_path"] = str(Path(recipe.dynamics.scores_path).parent)
        targets["dynamics.reference_output_dir"] = recipe.dynamics.reference_output_dir
    if recipe.evaluation is not None:
        targets["evaluation.output_dir"] = recipe.evaluation.output_dir
    return [f"`{key}`: {problem}" for key, path in targets.items() if path and (problem := writable_problem(path))]


def writable_problem(directory: str | os.PathLike) -> str | None:
    """None if files can be created under `directory` (which may not exist yet), else why not."""
    path = Path(directory).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} cannot be created: {existing} is a file, not a folder."
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".sftmix-write-probe-"):
            pass
    except OSError as error:
        where = "" if existing == path else f" (its nearest existing parent {existing})"
        return f"{path}{where} is not writable ({error.strerror}). Choose another directory or fix permissions."
    return None


def _looks_like_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and ".." not in name


def offline(*variables: str) -> bool:
    """Whether one of Hugging Face's offline switches (default HF_HUB_OFFLINE) is on, read as huggingface_hub reads it."""
    return any(os.environ.get(v, "").upper() in ("1", "TRUE", "YES", "ON") for v in variables or ("HF_HUB_OFFLINE",))


def hub_id_loadable(name: str, filenames=CONFIG_FILES, revision=None) -> bool:
    """Whether `from_pretrained` could fetch `name` as a Hub id: one, and with HF_HUB_OFFLINE in the cache."""
    if not _looks_like_hub_id(name):
        return False
    if not offline():
        return True
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        try:
            if isinstance(try_to_load_from_cache(name, filename, revision=revision), str):
                return True
        except Exception:  # an id the Hub would refuse too
            return False
    return False
