"""Recipes: one YAML per experiment, in the TRL / alignment-handbook way (README: "Recipes and the command line").

Top-level keys are the fields of `DataArguments` (sftmix.data), TRL's `ModelConfig` and `SFTMixConfig`; the
`dynamics:` and `evaluation:` mappings hold the fields of `DynamicsConfig` and `EvalConfig`; `env:` exports
environment variables. Command-line settings (`parse_overrides`) override the YAML; both are typed as the command
line types them (`coerce_settings`) and all problems are reported together (`sftmix.checks.RecipeProblems`).
Relative paths are looked up next to the recipe, then in the package, then in the working directory.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SECTIONS = ("dynamics", "evaluation")
RECIPES_DIR = Path(__file__).parent / "recipes"  # shipped with the package; in a checkout, a link to recipes/


@dataclass
class Recipe:
    data: Any
    model: Any
    training: Any
    dynamics: Any | None
    evaluation: Any | None
    path: Path | None = None


def setting_classes() -> dict[str, tuple]:
    """The dataclasses each part of a recipe sets: the top level ("") and each section."""
    from trl import ModelConfig

    from sftmix.config import SFTMixConfig
    from sftmix.data import DataArguments
    from sftmix.dynamics import DynamicsConfig
    from sftmix.evaluation import EvalConfig

    return {
        "": (DataArguments, ModelConfig, SFTMixConfig),
        "dynamics": (DynamicsConfig,),
        "evaluation": (EvalConfig,),
    }


def _unknown(keys, known, show) -> list[str]:
    """Each of `keys` not in `known`, as `show` writes it, with the closest known one."""
    found = []
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            found.append(show(key) + (f" (did you mean {show(close[0])}?)" if close else ""))
    return found


def _check_known(keys, known, where: str) -> None:
    unknown = _unknown(keys, known, repr)
    if unknown:
        raise ValueError(f"Unknown {where} key(s): {', '.join(unknown)}.")


def _to_int(value) -> int:
    number = float(value)  # "2.0" and "1e3" are whole numbers too
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _typed(value, action, hint):
    """`value` converted by the command line's own `type`, `nargs` and `choices` of its field (HfArgumentParser's
    `action`); a mapping or list passes as given where the annotation allows one (`dict | str`, `str | list[str]`)."""
    allowed = tuple(t for t in (typing.get_origin(a) or a for a in typing.get_args(hint)) if isinstance(t, type))
    if isinstance(value, (dict, list)) and action.nargs != "+" and isinstance(value, allowed):
        return value
    if action.nargs != "+":
        return _scalar(value, action)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise TypeError(value)
    return [_scalar(item, action) for item in items]


def _scalar(value, action):
    from transformers.hf_argparser import string_to_bool

    if action.type is dict:
        import yaml

        # from the command line: JSON or YAML
        value = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise TypeError(value)
        return value
    if not isinstance(value, (str, int, float)) or (isinstance(value, bool) and action.type is not string_to_bool):
        raise TypeError(value)  # a YAML boolean (yes/no) where a number or text is expected
    if action.type is string_to_bool:
        return string_to_bool({"on": "yes", "off": "no"}.get(str(value).strip().lower(), str(value).strip()))
    convert = {int: _to_int, float: float}.get(action.type)
    converted = convert(value) if convert else (action.type or str)(str(value))
    if action.choices and converted not in action.choices:
        raise ValueError(value)
    return converted


def _expected(action) -> str:
    from transformers.hf_argparser import string_to_bool

    if action.choices:
        text = f"one of {[str(c) for c in action.choices]}"
    else:
        names = {float: "a number", int: "a whole number", string_to_bool: "true or false", dict: "a mapping"}
        text = names.get(action.type, "text")
    return f"a list, each {text}" if action.nargs == "+" else text


def coerce_settings(classes, values: dict, where: str) -> tuple[dict, list[str]]:
    """`values` typed as the command line types them (HfArgumentParser's `type`, `choices` and `nargs` of each
    field), and a problem per value that is not. One string where a list is expected becomes a list; a YAML
    boolean where a number or text is expected is refused; None stays None. A mistyped key is left out."""
    from transformers import HfArgumentParser

    hints = {key: hint for cls in classes for key, hint in typing.get_type_hints(cls).items()}
    actions = {action.dest: action for action in reversed(HfArgumentParser(classes)._actions)}  # first wins
    result, problems = {}, []
    for key, value in values.items():
        if key == "resume_from_checkpoint" and isinstance(value, bool):  # `true`: the latest checkpoint
            value = "true" if value else None
        if value is None or key not in actions:
            result[key] = value
            continue
        try:
            result[key] = _typed(value, actions[key], hints.get(key))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            yaml_bool = " (YAML reads yes/no/on/off/true/false as booleans)" if isinstance(value, bool) else ""
            problems.append(
                f"`{key}: {value!r}` in {where}: expected {_expected(actions[key])}, got {type(value).__name__}"
                f"{yaml_bool}. Fix the value."
            )
    return result, problems


NULL_WORDS = ("null", "none", "~")

# Keys users bring from TRL and the alignment-handbook, and what sftmix reads instead
ONE_DATASET = (
    "sftmix trains on one dataset: `dataset_name` (+ `dataset_config`, `dataset_train_split`) for a Hub dataset, or "
    "`dataset_files: [a.jsonl, b.jsonl]` for local files (several files are concatenated)"
)
FOREIGN_KEYS = {
    "datasets": ONE_DATASET,
    "dataset_mixture": ONE_DATASET,
    "chat_template": "put the template in a .jinja file and set `chat_template_path: that/file.jinja`",
}

# Settings that name files or directories to read, per section ("" = top level)
PATH_FIELDS = {
    "": ("dataset_files", "chat_template_path", "model_name_or_path"),
    "dynamics": ("checkpoints", "reference_model"),
    "evaluation": ("heldout", "medqa", "medqa5", "pubmedqa", "pubmedqa_ids", "medmcqa", "chat_template_path"),
}


def builtin_recipes() -> list[str]:
    """Names of the shipped recipes, as `find_recipe` accepts them."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.yaml"))


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe by path, or by name among the shipped ones (`quickstart` = `quickstart/sftmix`)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = str(name).removesuffix(".yaml").removeprefix("recipes/")
    for candidate in (RECIPES_DIR / f"{stem}.yaml", RECIPES_DIR / stem / "sftmix.yaml"):
        if candidate.is_file():
            return candidate
    names = builtin_recipes()
    close = difflib.get_close_matches(stem, names, n=3)
    raise FileNotFoundError(
        f"Recipe {str(name)!r} is neither a file nor a shipped recipe"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
        + f". Shipped recipes: {', '.join(names)}."
    )


def parse_overrides(tokens: list[str]) -> tuple[dict, dict[str, dict]]:
    """`--key value` / `--key=value` / `--flag` / `--section.key value [value ...]` into (top-level, per section)
    settings, values as text (typed later like YAML values); `null` / `None` give None, `--no_flag` false."""
    top: dict = {}
    sections: dict[str, dict] = {name: {} for name in SECTIONS}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ValueError(f"Unexpected command-line argument {token!r}: settings are given as `--key value`.")
        key, has_value, value = token[2:].partition("=")
        values = [value] if has_value else []
        i += 1
        while not has_value and i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
        parsed = values[0] if len(values) == 1 else values or "true"
        if isinstance(parsed, str) and parsed.strip().lower() in NULL_WORDS:
            parsed = None
        section, dotted, name = key.replace("-", "_").partition(".")
        if dotted:
            if section not in SECTIONS:
                raise ValueError(
                    f"Unknown section {section!r} in `--{key}`: nested settings are `--dynamics.<key>` and "
                    "`--evaluation.<key>`."
                )
            sections[section][name] = parsed
        else:
            top[section] = parsed
    return top, sections


def _check_cli_keys(top: dict, sections: dict, known: dict[str, set[str]]) -> dict:
    """Unknown command-line keys, with the closest known one; `--no_flag` becomes `flag: false`."""
    renamed = {}
    for key, value in top.items():
        if key not in known[""] and key.startswith("no_") and key[3:] in known[""] and value == "true":
            key, value = key[3:], "false"
        renamed[key] = value
    unknown = _unknown(renamed, known[""], lambda key: f"--{key}")
    for section, values in sections.items():
        unknown += _unknown(values, known[section], lambda key, section=section: f"--{section}.{key}")
    if unknown:
        raise ValueError(f"Unknown command-line setting(s): {', '.join(unknown)}. See `sftmix run --help`.")
    return renamed


def resolve_path(value: str, recipe_dir: Path | None) -> str:
    """A relative path looked up next to the recipe, then in the package, then in the working directory; the
    first that exists wins (else the value is left for the checks to report)."""
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    package = Path(__file__).parent
    bases = [recipe_dir] if recipe_dir is not None else []
    for base in [*bases, package.parent, package, Path.cwd()]:
        candidate = base / value
        if candidate.exists():
            return str(candidate.resolve())
    return value


def resolve_paths(values: dict, section: str, recipe_dir: Path | None) -> dict:
    out = dict(values)
    for key in PATH_FIELDS[section]:
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [resolve_path(v, recipe_dir) for v in value]
        elif isinstance(value, str):
            out[key] = resolve_path(value, recipe_dir)
    return out


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matmuls are native on this CPU (AVX512-BF16 or AMX; else emulated, 3x to ~100x slower than fp32);
    SFTMIX_CPU_BF16=1 says yes. (oneDNN's own bf16 check also says yes on AVX512 CPUs that only emulate it.)"""
    if os.environ.get("SFTMIX_CPU_BF16", "").strip().lower() in ("1", "true", "yes"):
        return True
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume the user knows their machine
        return True


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Parse a recipe (and command-line overrides) into its dataclasses; nothing heavy is loaded."""
    import yaml
    from transformers import HfArgumentParser

    from sftmix.checks import RecipeProblems, collect_problems

    path = find_recipe(path) if path else None
    raw = (yaml.safe_load(path.read_text()) or {}) if path else {}
    if not isinstance(raw, dict):
        raise ValueError(f"Recipe {path} must be a mapping of settings, got {type(raw).__name__}.")
    for key, value in (raw.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)
    where = f"recipe {path}" if path else "recipe"
    classes = setting_classes()
    known = {name: {f.name for cls in group for f in fields(cls) if f.init} for name, group in classes.items()}
    given = {**{name: raw.pop(name, None) for name in SECTIONS}, "": raw}
    foreign = [f"`{key}`: {FOREIGN_KEYS[key]}" for key in raw if key in FOREIGN_KEYS]
    if foreign:
        raise ValueError(f"{where} uses keys sftmix does not read. " + "; ".join(foreign) + ".")
    cli_top, cli_sections = parse_overrides(list(overrides or []))
    cli = {**cli_sections, "": _check_cli_keys(cli_top, cli_sections, known)}

    recipe_dir, values, problems = (path.parent if path else None), {}, []
    for name, group in classes.items():
        if given[name] is not None and not isinstance(given[name], dict):
            raise ValueError(f"`{name}:` in {path} must be a mapping of settings.")
        if name and given[name] is None and not cli[name]:
            values[name] = None  # no such section
            continue
        yaml_values = given[name] or {}
        _check_known(yaml_values, known[name], f"`{name}:`" if name else where)
        merged = {
            **resolve_paths(yaml_values, name, recipe_dir),
            **resolve_paths(cli[name], name, Path.cwd()),
        }
        values[name], found = coerce_settings(group, merged, f"`{name}:` of {where}" if name else where)
        problems += found

    main = values[""]
    if "use_cpu" not in main:  # a recipe written for GPUs still runs (slowly) on a machine without one
        import torch

        main["use_cpu"] = not torch.cuda.is_available()
    if main.get("use_cpu") and main.get("bf16") and not cpu_has_fast_bf16():
        logger.warning(
            "This CPU has no native bf16 (AVX512-BF16 / AMX): bf16 autocast would be emulated, 3x to ~100x slower "
            "than fp32 here, so the recipe's `bf16: true` runs in fp32. Set SFTMIX_CPU_BF16=1 to keep bf16."
        )
        main["bf16"] = False
    parsed = {name: (None,) for name in SECTIONS}
    for name, group in classes.items():
        try:
            if values[name] is not None:
                parsed[name] = HfArgumentParser(group).parse_dict(values[name])
        except (ValueError, TypeError) as error:
            if not problems:
                raise
            problems.append(f"`{name}:` {error}" if name else str(error))
    if "" in parsed:
        recipe = Recipe(*parsed[""], *parsed["dynamics"], *parsed["evaluation"], path)
        if recipe.dynamics is not None and recipe.dynamics.mode == "training" and recipe.training.mixup_enabled:
            recipe.training.training_dynamics = True  # the one switch the trainer and the pipeline read
        if not problems:
            return recipe
        problems += collect_problems(recipe)  # reported with everything else the checks find, in one error
    raise RecipeProblems(problems, path)
