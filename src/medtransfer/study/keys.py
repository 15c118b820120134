"""Every key of the study config, generated from the config dataclasses themselves.

Each key's type, default and allowed values come from the dataclass fields (``Literal`` and
``Enum`` types give the allowed values); its meaning is the field's comment (on its line or the
lines above it), else the sentence of the class docstring that names it (````key````), else the
first sentence of the section's own docstring. ``medtransfer keys`` prints them, ``--markdown``
writes ``docs/config.md``, ``--json-schema`` a JSON Schema for editors. They read the packaged
``keys.json`` (so they need not import torch); ``python -m medtransfer.study.keys`` rewrites it
from the config classes.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medtransfer import catalog
from medtransfer.catalog import NAME, Key, format_keys, select_keys
from medtransfer.config import field_default, to_dict
from medtransfer.strategies import STRATEGIES
from medtransfer.study.config import StudyConfig

__all__ = ["NAME", "Key", "all_keys", "allowed_values", "catalog_text", "config_keys", "dataclass_schema",
           "format_keys", "format_value", "keys_markdown", "study_schema", "type_name"]

# -- meanings from the source ---------------------------------------------------------------------

def _clean(text: str) -> str:
    text = re.sub(r":(?:mod|attr|func|class|meth):`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return " ".join(text.split())


def _first_sentence(text: str) -> str:
    text = _clean(text)
    match = re.search(r"(?<=[.:;])\s+(?=[A-Z`(])", text)
    return (text[: match.start()] if match else text).rstrip(".:;")


@functools.cache
def _field_comments(cls: type) -> dict[str, str]:
    """Field name → its comment (trailing, or the comment lines right above it)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    only: set[int] = set()  # lines holding nothing but a comment
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            comments[row] = tok.string.lstrip("#").strip()
            if not tok.line[: tok.start[1]].strip():
                only.add(row)
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            end = node.end_lineno or node.lineno
            text = comments.get(end) if end not in only else None
            if text is None:
                above: list[str] = []
                row = node.lineno - 1
                while row in only:
                    above.insert(0, comments[row])
                    row -= 1
                text = " ".join(above) or None
            if text:
                out[node.target.id] = _clean(text)
    return out


def _doc(cls: type) -> str:
    doc = cls.__doc__ or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc  # dataclass's generated signature


def _meaning(cls: type, name: str, tp: Any) -> str:
    comment = _field_comments(cls).get(name)
    if comment:
        return comment
    doc = _clean(_doc(cls))
    for sentence in re.split(r"(?<=[.;])\s+(?=[A-Z`(])", doc):
        if re.search(rf"`{re.escape(name)}`", sentence):
            return sentence.rstrip(".;")
    inner = _section(tp)
    return _first_sentence(_doc(inner)) if inner is not None and _doc(inner) else ""


# -- types, defaults, allowed values --------------------------------------------------------------

def _options(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _section(tp: Any) -> type | None:
    """The dataclass a field holds (directly or as ``X | None``), if any."""
    found = [a for a in _options(tp) if dataclasses.is_dataclass(a) and isinstance(a, type)]
    return found[0] if found else None


def type_name(tp: Any) -> str:
    """A reader's name for a config type: ``int``, ``list of string``, ``section | null``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(sorted({type_name(type(a)) for a in args}))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "string"
    if dataclasses.is_dataclass(tp):
        return "section"
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(type_name(a) for a in args) + "]"
        return f"list of {type_name(args[0]) if args else 'any'}"
    if origin is dict:
        return f"mapping of name → {type_name(args[1]) if len(args) == 2 else 'any'}"
    names = {int: "int", float: "number", str: "string", bool: "bool", Path: "path"}
    return names.get(tp, "any" if tp is Any else getattr(tp, "__name__", str(tp)))


def allowed_values(tp: Any) -> tuple[str, ...]:
    """The values a ``Literal`` or ``Enum`` type (or a union holding them) allows."""
    out: list[str] = []
    for arg in _options(tp):
        if typing.get_origin(arg) is typing.Literal:
            out += [str(a) for a in typing.get_args(arg)]
        elif isinstance(arg, type) and issubclass(arg, enum.Enum):
            out += [str(m.value) for m in arg]
    return tuple(out)


def format_value(value: Any) -> str:
    """A default as it would be written in YAML."""
    if value is dataclasses.MISSING:
        return "required"
    value = to_dict(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


# -- the walk -------------------------------------------------------------------------------------

def _walk(cls: type, prefix: str, instance: Any = None, when: str = "") -> Iterator[Key]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, path = hints[f.name], f"{prefix}{f.name}"
        own = field_default(f)
        value = getattr(instance, f.name) if instance is not None else own
        section = _section(tp)
        if section is not None:
            default = "" if value is not None else "null"
            if own is dataclasses.MISSING:
                default = "required"
        else:
            default = format_value(value)
            if own is not value and own is not dataclasses.MISSING and format_value(own) != default:
                default += f" (if the section is written: {format_value(own)})"
        shown = "mapping of name → strategy" if cls is StudyConfig and f.name == "strategies" else None
        yield Key(path, shown or type_name(tp), default, allowed_values(tp), _meaning(cls, f.name, tp), when)
        if shown:
            yield from _strategies(f"{path}.{NAME}.")
        elif section is not None:
            yield from _walk(section, f"{path}.", value if dataclasses.is_dataclass(value) else None,
                             when)
        elif typing.get_origin(tp) in (dict, list):
            inner = _section(typing.get_args(tp)[-1])
            if inner is not None:
                mid = f".{NAME}." if typing.get_origin(tp) is dict else "[]."
                yield from _walk(inner, f"{path}{mid}", None, when)


def _strategies(prefix: str) -> Iterator[Key]:
    """A matrix's strategies: ``kind`` picks the dataclass; keys shared by kinds are merged."""
    yield Key(f"{prefix}kind", "string", "required", tuple(STRATEGIES),
              "which transfer strategy this is; the keys below depend on it")
    merged: dict[tuple[str, str, str, tuple[str, ...], str], list[str]] = {}
    for kind, cls in STRATEGIES.items():
        for key in _walk(cls, prefix, cls()):
            if key.path != f"{prefix}kind":
                shape = (key.path, key.type, key.default, key.allowed, key.meaning)
                merged.setdefault(shape, []).append(kind)
    for (path, tp, default, allowed, meaning), kinds in merged.items():
        yield Key(path, tp, default, allowed, meaning, "kind: " + ", ".join(kinds))


@functools.cache
def all_keys() -> tuple[Key, ...]:
    """Every key of the study config, in declaration order."""
    return tuple(_walk(StudyConfig, "", None))


def config_keys(section: str | None = None) -> list[Key]:
    """The keys under ``section`` (see :func:`medtransfer.catalog.select_keys`); all without one."""
    return select_keys(all_keys(), section)


def keys_markdown(keys: list[Key] | None = None) -> str:
    """``docs/config.md``: a table per top-level section."""
    return catalog.keys_markdown(list(all_keys()) if keys is None else keys)


# -- JSON Schema ----------------------------------------------------------------------------------

def _type_schema(tp: Any, instance: Any = None) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a, instance) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is typing.Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return {"enum": list(allowed_values(tp))}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return dataclass_schema(tp, instance if isinstance(instance, tp) else None)
    if origin in (list, tuple) or tp in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [_type_schema(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1]) if len(args) == 2 else {}}
    names = {int: "integer", float: "number", str: "string", bool: "boolean", Path: "string"}
    return {"type": names[tp]} if tp in names else {}


def dataclass_schema(cls: type, instance: Any = None) -> dict[str, Any]:
    """A JSON Schema object for config dataclass ``cls`` (defaults from ``instance`` if given)."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        own = field_default(f)
        value = getattr(instance, f.name) if instance is not None else own
        if cls is StudyConfig and f.name == "strategies":
            kinds = [dataclass_schema(c, c()) for c in STRATEGIES.values()]
            for schema in kinds:
                schema["required"] = ["kind"]
            prop: dict[str, Any] = {"type": "object", "additionalProperties": {"oneOf": kinds}}
        else:
            prop = _type_schema(hints[f.name], value)
        meaning = _meaning(cls, f.name, hints[f.name])
        if meaning:
            prop["description"] = meaning
        if own is dataclasses.MISSING:
            required.append(f.name)
        elif not dataclasses.is_dataclass(value):
            prop["default"] = to_dict(value)
        props[f.name] = prop
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    if _doc(cls):
        out["description"] = _first_sentence(_doc(cls))
    return out


def study_schema() -> dict[str, Any]:
    """The JSON Schema of a study YAML."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "medtransfer study",
            **dataclass_schema(StudyConfig)}


def catalog_text() -> str:
    """What the packaged ``keys.json`` must hold: every key and the study schema."""
    return catalog.catalog_json(all_keys(), study_schema())


if __name__ == "__main__":  # python -m medtransfer.study.keys: rewrite keys.json
    target = Path(catalog.__file__).with_name(catalog.KEYS_FILE)
    target.write_text(catalog_text(), encoding="utf-8")
    print(f"wrote {target}; now regenerate docs/config.md: medtransfer keys --markdown > docs/config.md")
