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
"""

from __future__ import annotations

import difflib
import enum
import os
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union

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
        if key == "resume_from_checkpoint" and isinstance(value, bool):  # `true`: the latest checkpoint in output_dir
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


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Parse a recipe (and command-line overrides) into its dataclasses; nothing heavy is loaded."""
    from transformers import HfArgumentParser
    from trl import ModelConfig

    from sftmix.config import SFTMixConfig
    from sftmix.data import DataArguments

    raw = read_yaml(path) if path else {}
    for key, value in (raw.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)
    sections = {name: raw.pop(name, None) for name in SECTIONS}

    where = f"recipe {path}" if path else "recipe"
    main_classes = (DataArguments, ModelConfig, SFTMixConfig)
    parser = HfArgumentParser(main_classes)
    known = {f.name for cls in main_classes for f in fields(cls) if f.init}
    _check_known(raw, known, where)
    raw, problems = coerce_settings(main_classes, raw, where)
    if "use_cpu" not in raw:  # a recipe written for GPUs still runs (slowly) on a machine without one
        import torch

        raw["use_cpu"] = not torch.cuda.is_available()
    parser.set_defaults(**raw)
    try:
        data, model, training, rest = parser.parse_args_into_dataclasses(
            args=list(overrides or []), return_remaining_strings=True
        )
    except (ValueError, TypeError) as error:
        if not problems:
            raise
        _raise_problems(problems + [str(error)], path)
    if rest:
        raise ValueError(f"Unknown command-line argument(s): {' '.join(rest)}.")

    parsed = {}
    for name, cls in _section_classes().items():
        values = sections[name]
        if values is None:
            parsed[name] = None
            continue
        if not isinstance(values, dict):
            raise ValueError(f"`{name}:` in {path} must be a mapping of settings.")
        _check_known(values, {f.name for f in fields(cls) if f.init}, f"`{name}:`")
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
    if problems:  # report them with everything else the checks find, in one error
        from sftmix.checks import collect_problems

        _raise_problems(problems + collect_problems(recipe), path)
    return recipe


def _raise_problems(problems: list[str], path) -> typing.NoReturn:
    from sftmix.checks import RecipeProblems

    raise RecipeProblems(problems, path)
