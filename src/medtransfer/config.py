"""Strict typed configs: dataclasses filled from YAML, every mistake named by its key path.

Any module declares its settings as a (frozen) dataclass; :func:`from_dict` builds it from plain
data and rejects unknown keys (suggesting the closest valid one), wrong types and bad enum values.
:func:`to_dict` turns it back into plain data, so a resolved config can be written next to results.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medtransfer.errors import ConfigError

T = TypeVar("T")

# Per-channel (mean, std) of inputs in [0, 1]; models see ``(x - mean) / std``.
InputNorm = tuple[Sequence[float], Sequence[float]]
# Field metadata of a value that is not data (a record's own folder): to_dict leaves it out and
# from_dict does not take it.
NOT_SAVED = {"saved": False}


def _saved(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("saved", True))

# The framework whose semantics a config section follows where PyTorch's and Keras's differ: torch
# (PyTorch's defaults) or keras (Keras 3's; see docs/config.md, key ``compat``). A section's
# ``compat: null`` takes the study's.
Compat = typing.Literal["torch", "keras"]
COMPATS: tuple[str, ...] = ("torch", "keras")


def fill_compat(obj: Any, compat: str) -> Any:
    """``obj`` (a config dataclass, or a dict / list of them) with every nested ``compat`` field
    that is None set to ``compat``; fields set explicitly keep their value."""
    if isinstance(obj, dict):
        new_items = {k: fill_compat(v, compat) for k, v in obj.items()}
        return obj if all(new_items[k] is v for k, v in obj.items()) else new_items
    if isinstance(obj, list):
        new_list = [fill_compat(v, compat) for v in obj]
        return obj if all(a is b for a, b in zip(new_list, obj, strict=True)) else new_list
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        new = compat if f.name == "compat" and value is None else fill_compat(value, compat)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(obj, **changes) if changes else obj


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def closest(name: str, choices: typing.Iterable[str]) -> str | None:
    """The valid name most like ``name``, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key: str, where: str, valid: typing.Iterable[str]) -> str:
    valid = sorted(valid)
    hint = closest(key, valid)
    place = f" in '{where}'" if where else ""
    msg = f"unknown key '{key}'{place}"
    if hint:
        msg += f"; did you mean '{hint}'?"
    return msg + f" Valid keys: {', '.join(valid)}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error says what is wrong inside the value
            return _convert(value, options[0], where)
        errors = []
        for arg in options:
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(f"as {_type_name(arg)}: {exc}")
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"'{where}': expected {names}, got {value!r} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value in args:
            return value
        hint = closest(str(value), [str(a) for a in args])
        extra = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(
            f"'{where}': got {value!r}{extra} Allowed: {', '.join(repr(a) for a in args)}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}': expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            choices = [str(m.value) for m in tp]
            hint = closest(str(value), choices)
            extra = f"; did you mean '{hint}'?" if hint else ""
            raise ConfigError(
                f"'{where}': got {value!r}{extra} Allowed: {', '.join(choices)}"
            ) from None
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{where}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"'{where}': expected {len(args)} values, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_convert(v, a, _join(where, i)) for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = _convert_all([(v, item, _join(where, i)) for i, v in enumerate(value)])
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}': expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        values = _convert_all([(v, vt, _join(where, str(k))) for k, v in value.items()])
        return dict(zip(map(str, value), values, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{where}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{where}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"'{where}': expected a number, got {value!r}") from None
        raise ConfigError(f"'{where}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{where}': expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"'{where}': expected a path, got {value!r}")
    raise TypeError(f"config type {tp!r} at '{where}' is not supported")


def _convert_all(items: list[tuple[Any, Any, str]]) -> list[Any]:
    """Each (value, type, key path) converted; every item's mistakes reported together."""
    out, problems = [], []
    for value, tp, where in items:
        try:
            out.append(_convert(value, tp, where))
        except ConfigError as exc:
            problems += problems_of(exc)
    if problems:
        raise config_error(problems)
    return out


MAX_PROBLEMS = 20  # config mistakes listed at once; the rest are counted


class ConfigErrors(ConfigError):
    """Several config mistakes found at once; ``problems`` holds each one's message."""

    def __init__(self, problems: Sequence[str], source: str = "") -> None:
        self.problems = list(problems)
        shown = [f"  - {p}" for p in self.problems[:MAX_PROBLEMS]]
        more = len(self.problems) - MAX_PROBLEMS
        tail = [f"  ... and {more} more"] if more > 0 else []
        head = f"{source}: " if source else ""
        super().__init__("\n".join([f"{head}{len(self.problems)} problems:", *shown, *tail]))


def problems_of(exc: ConfigError) -> list[str]:
    """The messages of ``exc``'s mistakes (one, or each of a :class:`ConfigErrors`)."""
    return list(exc.problems) if isinstance(exc, ConfigErrors) else [str(exc)]


def config_error(problems: Sequence[str], source: str = "") -> ConfigError:
    """One mistake as a plain :class:`ConfigError` (its message unchanged), several as
    :class:`ConfigErrors`; ``source`` (a config file, ``--set``) is named in front."""
    if len(problems) == 1:
        return ConfigError(f"{source}: {problems[0]}" if source else problems[0])
    return ConfigErrors(problems, source)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from plain data, strictly; every unknown key, missing key and
    wrong value is reported at once (a :class:`ConfigErrors` when there are several)."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{where or cls.__name__}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and _saved(f)}  # type: ignore[arg-type]
    problems = [unknown_key_message(str(key), where, fields) for key in data if key not in fields]
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        path = _join(where, name)
        if name in data:
            try:
                kwargs[name] = _convert(data[name], hints[name], path)
            except ConfigError as exc:
                problems += problems_of(exc)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"missing required key '{path}'")
    if problems:  # the class's own checks need every value converted
        raise config_error(problems)
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"'{where or cls.__name__}': {exc}") from exc
    return obj


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory called), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def to_dict(obj: Any, *, skip_defaults: bool = False) -> Any:
    """Plain (YAML/JSON-able) data from a config dataclass.

    ``skip_defaults`` leaves out fields at their default value, so that adding an option with a
    default that keeps the old behaviour does not change the hash of an existing config.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if not _saved(f):
                continue
            value = getattr(obj, f.name)
            if skip_defaults and field_default(f) is not dataclasses.MISSING and value == field_default(f):
                continue
            out[f.name] = to_dict(value, skip_defaults=skip_defaults)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [to_dict(v, skip_defaults=skip_defaults) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v, skip_defaults=skip_defaults) for k, v in obj.items()}
    return obj


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML's own error names it
                continue
            if earlier is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}: first on line {earlier.start_mark.line + 1}, "
                    f"again on line {key_node.start_mark.line + 1}; give each key once",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; errors name the file (and a key given twice, with both
    line numbers)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.constructor.ConstructorError as exc:
        if exc.problem and exc.problem.startswith("duplicate key"):
            raise ConfigError(f"config file {path}: {exc.problem}") from None
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    except yaml.YAMLError as exc:
        for mark in (getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)):
            if mark is not None:  # it names "<unicode string>", not the file
                mark.name = str(path)
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top, got {type(data).__name__}")
    return data


DEVICES = "auto, cpu, cuda, cuda:N, mps"


def check_device(name: str, value: str) -> None:
    """ConfigError unless ``value`` names a device: auto, cpu, cuda, cuda:N or mps."""
    if not isinstance(value, str) or (value not in ("auto", "cpu") and not value.startswith(("cuda", "mps"))):
        raise ConfigError(f"'{name}': got {value!r}; allowed: {DEVICES}")


SEED_MAX = 2**32 - 1  # numpy's RandomState and scikit-learn's random_state take 0..2**32 - 1


def check_seed(name: str, value: object, high: int = SEED_MAX, why: str = "") -> None:
    """A ConfigError naming ``name``, the value and the range unless ``value`` is an integer
    seed in 0..``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ConfigError(f"'{name}': got {value!r}; expected an integer seed from 0 to {high:,}"
                          + (f" ({why})" if why else ""))


def check_choice(
    name: str, value: Any, choices: typing.Iterable[Any], error: type[Exception] = ConfigError
) -> None:
    """Raise ``error`` (ConfigError by default) naming the parameter, the value and the allowed
    choices, with the closest one suggested."""
    choices = list(choices)
    if value not in choices:
        hint = closest(str(value), [str(c) for c in choices])
        extra = f"; did you mean '{hint}'?" if hint else ""
        raise error(
            f"'{name}': got {value!r}{extra} Allowed: {', '.join(str(c) for c in choices)}"
        )
