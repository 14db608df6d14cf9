"""Recipes: one YAML per experiment, in the TRL / alignment-handbook way.

Top-level keys are the fields of `DataArguments` (sftmix.data), TRL's `ModelConfig` and `SFTMixConfig`;
they are defaults that command-line flags (`--learning_rate 1e-5`) override. Two optional mappings hold the
other stages: `dynamics:` (fields of `sftmix.dynamics.DynamicsConfig`) and `evaluation:` (fields of
`sftmix.evaluation.EvalConfig`); `env:` exports environment variables. Unknown keys are errors.

YAML values are checked against the settings' types as the command line checks them (`coerce_settings`):
a quoted number (`num_checkpoints: "3"`, or `1e-5`, which YAML reads as text) becomes a number, one string
where a list is expected (`dataset_files: data.jsonl`) becomes a list, and a YAML boolean where a number is
expected (`mixup_weight: yes`) is an error naming the key. All problems of a recipe are reported together
(`sftmix.checks.RecipeProblems`), with those the other checks find.

A recipe is named by its path or by its name among the recipes shipped with the package (`quickstart`,
`llama-3.1-8b/alpaca/sftmix`; `find_recipe`). Command-line settings (`--key value`, `--section.key value` for
the nested sections, `--key null` for None) override the YAML and go through the same type checks
(`parse_overrides`). Relative paths inside a recipe (data, templates, evaluation files, checkpoints) are
looked up next to the recipe file, then in the package, then in the working directory (`resolve_paths`).
"""

from __future__ import annotations

import difflib
import enum
import logging
import os
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union

logger = logging.getLogger(__name__)

SECTIONS = ("dynamics", "evaluation")


@dataclass
class Recipe:
    data: Any
    model: Any
    training: Any
    dynamics: Any | None
    evaluation: Any | None
    path: Path | None = None


def _section_classes():
    from sftmix.dynamics import DynamicsConfig
    from sftmix.evaluation import EvalConfig

    return {"dynamics": DynamicsConfig, "evaluation": EvalConfig}


def read_yaml(path: str | os.PathLike) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist. Recipes live under recipes/<model>/<task>/.")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"Recipe {path} must be a mapping of settings, got {type(raw).__name__}.")
    return raw


def _check_known(keys, known: set[str], where: str) -> None:
    unknown = [k for k in keys if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"Unknown {where} key(s): {', '.join(hints)}.")


class _Mistyped(Exception):
    pass


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value, hint):
    """`value` as type `hint`, with the conversions the command line makes; raises `_Mistyped`."""
    if value is None or hint is Any or isinstance(hint, (str, typing.ForwardRef)):
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options:  # a value already of one of the types stays as it is
            if _is_instance(value, option):
                return _coerce(value, option)
        for option in options:
            try:
                return _coerce(value, option)
            except _Mistyped:
                continue
        raise _Mistyped(" or ".join(_type_name(o) for o in options))
    if origin is Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice or (not isinstance(value, bool) and str(value) == str(choice)):
                return choice
        raise _Mistyped(f"one of {list(choices)}")
    if origin in (list, tuple) or hint in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _Mistyped(f"a list of {_type_name(item)}")
        return [_coerce(v, item) for v in value]
    if origin is dict or hint is dict:
        if isinstance(value, str):  # from the command line: JSON or YAML text
            import yaml

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise _Mistyped("a mapping") from None
        if not isinstance(value, dict):
            raise _Mistyped("a mapping")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mistyped("true or false")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _Mistyped("a number" if hint is float else "a whole number")
        try:
            number = float(value) if hint is float else _to_int(value)
        except ValueError:
            raise _Mistyped("a number" if hint is float else "a whole number") from None
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mistyped("text")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        try:
            return hint(value)
        except ValueError:
            raise _Mistyped(f"one of {[m.value for m in hint]}") from None
    return value  # other types (objects given from Python): passed through as before


def _to_int(value) -> int:
    if isinstance(value, str):
        value = value.strip()
        try:
            return int(value)
        except ValueError:
            value = float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def _is_instance(value, hint) -> bool:
    origin = typing.get_origin(hint) or hint
    if origin is Literal:
        return value in typing.get_args(hint)
    if not isinstance(origin, type):
        return False
    if origin in (int, float) and isinstance(value, bool):
        return False
    if origin is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin)


def coerce_settings(classes, values: dict, where: str) -> tuple[dict, list[str]]:
    """`values` converted to the types of the dataclass fields they set, and a problem per value that is not.

    Handles `X | None` / Optional, unions, `list[...]` (one string becomes a list of one), bool, int, float,
    str, Literal and enums, and a field's `choices`; None stays None. A mistyped key is left out of the result.
    """
    specs = {}
    for cls in classes:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation this Python cannot resolve: use the raw ones
            hints = {}
        for f in fields(cls):
            if f.init and f.name not in specs:
                specs[f.name] = (hints.get(f.name, f.type), f.metadata.get("choices"))
    result, problems = {}, []
    for key, value in values.items():
        if key not in specs:
            result[key] = value
            continue
        if key == "resume_from_checkpoint" and isinstance(
            value, bool
        ):  # `true`: the latest checkpoint in output_dir
            result[key] = "true" if value else None
            continue
        hint, choices = specs[key]
        try:
            converted = _coerce(value, hint)
        except _Mistyped as expected:
            yaml_bool = (
                " (YAML reads yes/no/on/off/true/false as booleans)" if isinstance(value, bool) else ""
            )
            problems.append(
                f"`{key}: {value!r}` in {where}: expected {expected}, got {type(value).__name__}{yaml_bool}. "
                "Fix the value."
            )
            continue
        if choices and converted is not None and not isinstance(converted, list):
            allowed = [str(c) for c in choices]
            if str(converted) not in allowed:
                problems.append(f"`{key}: {value!r}` in {where}: expected one of {allowed}. Fix the value.")
                continue
        result[key] = converted
    return result, problems


NULL_WORDS = ("null", "none", "~")

# Keys users bring from TRL and the alignment-handbook, and what sftmix reads instead
FOREIGN_KEYS = {
    "datasets": "sftmix trains on one dataset: `dataset_name` (+ `dataset_config`, `dataset_train_split`) for a Hub "
    "dataset, or `dataset_files: [a.jsonl, b.jsonl]` for local files (several files are concatenated)",
    "dataset_mixture": "sftmix trains on one dataset: `dataset_name` (+ `dataset_config`, `dataset_train_split`) for "
    "a Hub dataset, or `dataset_files: [a.jsonl, b.jsonl]` for local files (several files are concatenated)",
    "chat_template": "put the template in a .jinja file and set `chat_template_path: that/file.jinja`",
}

# Settings that name files or directories to read, per section ("" = top level)
PATH_FIELDS = {
    "": ("dataset_files", "chat_template_path", "model_name_or_path"),
    "dynamics": ("checkpoints", "reference_model"),
    "evaluation": ("heldout", "medqa", "medqa5", "pubmedqa", "pubmedqa_ids", "medmcqa", "chat_template_path"),
}


def package_recipes_dir() -> Path:
    """The recipes shipped with the package (in a checkout: a link to the top-level `recipes/`)."""
    return Path(__file__).parent / "recipes"


def builtin_recipes() -> list[str]:
    """Names of the shipped recipes, as `find_recipe` accepts them."""
    root = package_recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe by path, or by name among the shipped ones (`quickstart` = `quickstart/sftmix`)."""
    path = Path(name)
    if path.is_file():
        return path
    root = package_recipes_dir()
    stem = str(name).removesuffix(".yaml").removeprefix("recipes/")
    for candidate in (root / f"{stem}.yaml", root / stem / "sftmix.yaml"):
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
            raise ValueError(
                f"Unexpected command-line argument {token!r}: settings are given as `--key value`."
            )
        key, has_value, value = token[2:].partition("=")
        values = [value] if has_value else []
        i += 1
        while not has_value and i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
        if not values:
            parsed = "true"
        elif len(values) == 1:
            parsed = None if values[0].strip().lower() in NULL_WORDS else values[0]
        else:
            parsed = values
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


def _check_cli_keys(top: dict, sections: dict, known: set[str], section_known: dict[str, set[str]]) -> dict:
    """Unknown command-line keys, with the closest known one; `--no_flag` becomes `flag: false`."""
    problems, renamed = [], {}
    for key, value in top.items():
        if key in known:
            renamed[key] = value
        elif key.startswith("no_") and key[3:] in known and value == "true":
            renamed[key[3:]] = "false"
        else:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(f"--{key}" + (f" (did you mean --{close[0]}?)" if close else ""))
    for section, values in sections.items():
        for key in values:
            if key not in section_known[section]:
                close = difflib.get_close_matches(key, section_known[section], n=1)
                problems.append(
                    f"--{section}.{key}" + (f" (did you mean --{section}.{close[0]}?)" if close else "")
                )
    if problems:
        raise ValueError(f"Unknown command-line setting(s): {', '.join(problems)}. See `sftmix run --help`.")
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


def _refuse_foreign_keys(raw: dict, where: str) -> None:
    found = [f"`{key}`: {FOREIGN_KEYS[key]}" for key in raw if key in FOREIGN_KEYS]
    if found:
        raise ValueError(f"{where} uses keys sftmix does not read. " + "; ".join(found) + ".")


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matmuls are native on this CPU (else emulated, ~100x slower than fp32); SFTMIX_CPU_BF16=1 says yes."""
    if os.environ.get("SFTMIX_CPU_BF16", "").strip().lower() in ("1", "true", "yes"):
        return True
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # no oneDNN build: assume the user knows their machine
        return True


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Parse a recipe (and command-line overrides) into its dataclasses; nothing heavy is loaded."""
    from transformers import HfArgumentParser
    from trl import ModelConfig

    from sftmix.config import SFTMixConfig
    from sftmix.data import DataArguments

    path = find_recipe(path) if path else None
    raw = read_yaml(path) if path else {}
    for key, value in (raw.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)
    sections = {name: raw.pop(name, None) for name in SECTIONS}

    where = f"recipe {path}" if path else "recipe"
    _refuse_foreign_keys(raw, where)
    main_classes = (DataArguments, ModelConfig, SFTMixConfig)
    parser = HfArgumentParser(main_classes)
    known = {f.name for cls in main_classes for f in fields(cls) if f.init}
    _check_known(raw, known, where)
    section_classes = _section_classes()
    cli_top, cli_sections = parse_overrides(list(overrides or []))
    cli_top = _check_cli_keys(
        cli_top,
        cli_sections,
        known,
        {name: {f.name for f in fields(cls) if f.init} for name, cls in section_classes.items()},
    )
    recipe_dir = path.parent if path else None
    raw = {**resolve_paths(raw, "", recipe_dir), **resolve_paths(cli_top, "", Path.cwd())}
    for name, values in cli_sections.items():
        if values:
            yaml_values = sections[name] if isinstance(sections[name], dict) else {}
            yaml_values = resolve_paths(yaml_values, name, recipe_dir)
            sections[name] = {**yaml_values, **resolve_paths(values, name, Path.cwd())}
    raw, problems = coerce_settings(main_classes, raw, where)
    if "use_cpu" not in raw:  # a recipe written for GPUs still runs (slowly) on a machine without one
        import torch

        raw["use_cpu"] = not torch.cuda.is_available()
    if raw.get("use_cpu") and raw.get("bf16") and not cpu_has_fast_bf16():
        logger.warning(
            "This CPU has no native bf16 (AVX512-BF16 / AMX): bf16 autocast would be about 100x slower than fp32 "
            "here, so the recipe's `bf16: true` runs in fp32. Set SFTMIX_CPU_BF16=1 to keep bf16."
        )
        raw["bf16"] = False
    parser.set_defaults(**raw)
    try:
        data, model, training, rest = parser.parse_args_into_dataclasses(
            args=[], return_remaining_strings=True
        )
    except (ValueError, TypeError) as error:
        if not problems:
            raise
        _raise_problems(problems + [str(error)], path)
    if rest:
        raise ValueError(f"Unknown command-line argument(s): {' '.join(rest)}.")

    parsed = {}
    for name, cls in section_classes.items():
        values = sections[name]
        if values is None:
            parsed[name] = None
            continue
        if not isinstance(values, dict):
            raise ValueError(f"`{name}:` in {path} must be a mapping of settings.")
        _check_known(values, {f.name for f in fields(cls) if f.init}, f"`{name}:`")
        values = resolve_paths(values, name, recipe_dir)
        values, section_problems = coerce_settings([cls], values, f"`{name}:` of {where}")
        problems += section_problems
        try:
            parsed[name] = cls(**values)
        except (ValueError, TypeError) as error:
            if not problems:
                raise
            problems.append(f"`{name}:` {error}")
            parsed[name] = None
    recipe = Recipe(
        data, model, training, parsed["dynamics"], parsed["evaluation"], Path(path) if path else None
    )
    if recipe.dynamics is not None and recipe.dynamics.mode == "training" and training.mixup_enabled:
        training.training_dynamics = True  # the one switch the trainer and the pipeline read
    if problems:  # report them with everything else the checks find, in one error
        from sftmix.checks import collect_problems

        _raise_problems(problems + collect_problems(recipe), path)
    return recipe


def _raise_problems(problems: list[str], path) -> typing.NoReturn:
    from sftmix.checks import RecipeProblems

    raise RecipeProblems(problems, path)
