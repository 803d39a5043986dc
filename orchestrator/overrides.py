"""Command-line overrides of a variant's config, as Hydra and DVC users type them.

``orch train baseline -s study.train.lr=3e-4 -s study.predictor.depth=6`` reaches the train
entry point as ``--set study.train.lr=3e-4 --set study.predictor.depth=6`` (the train
contract, requirements.md section 3); the entry point applies them to its typed dataclass
config with `apply_overrides`. orch itself only checks their form (`parse_override`): it never
imports a variant, so it cannot know the keys. Each value is converted to the type of the
field it replaces (``3e-4`` becomes a float for a float field, ``6`` an int, ``true`` a bool,
``none`` None where the field may be None, ``[4,8]`` or ``4,8`` a tuple), so a frozen
dataclass config stays what its type says. A key the config does not have is an error that
names the nearest keys. Pure Python: a variant's process uses it without orch's extras.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

SET_FLAG = "--set"  # the train entry point's option, repeated once per override

_NONE_WORDS = {"none", "null", "~"}
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


class OverrideError(ValueError):
    """An override that cannot apply: unknown key, bad form, or a value of the wrong type."""


def parse_override(text: str) -> tuple[str, str]:
    """``"study.train.lr=3e-4"`` -> ``("study.train.lr", "3e-4")``; the value stays text."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError(f"override {text!r} is not KEY=VALUE (e.g. study.train.lr=3e-4)")
    if any(not part.isidentifier() for part in key.split(".")):
        raise OverrideError(f"override key {key!r} is not a dotted name (e.g. study.train.lr)")
    return key, value.strip()


def parse_overrides(texts: Iterable[str]) -> dict[str, str]:
    """Several overrides, the last one winning for a key typed twice (as Hydra does)."""
    return dict(parse_override(text) for text in texts)


def config_keys(config: Any, prefix: str = "") -> list[str]:
    """Every settable dotted key of a dataclass config (its leaves), in field order."""
    keys = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        name = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            keys += config_keys(value, f"{name}.")
        else:
            keys.append(name)
    return keys


def apply_overrides(config: Any, overrides: Mapping[str, str]) -> tuple[Any, dict[str, Any]]:
    """``config`` (a dataclass, nested dataclasses inside) with each override applied, and
    the typed values applied (key -> value), for the run's records. Every key is checked
    before any is applied, so a bad one leaves nothing half done."""
    known = config_keys(config)
    unknown = [key for key in overrides if key not in known]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, known, n=3, cutoff=0.5) or _siblings(key, known)
        hint = f"; nearest: {', '.join(near)}" if near else ""
        raise OverrideError(f"override {key!r}: the config has no such key{hint}")
    typed: dict[str, Any] = {}
    for key, text in overrides.items():
        config = _set(config, key.split("."), text, key)
        typed[key] = dotted_value(config, key)
    return config, typed


def _siblings(key: str, known: list[str]) -> list[str]:
    """Keys under the same group, when the last part is too far from any for difflib."""
    group = key.rpartition(".")[0]
    return [k for k in known if k.rpartition(".")[0] == group][:5] if group else []


def dotted_value(config: Any, key: str) -> Any:
    """The value at dotted ``key`` of a dataclass config, or of one `asdict` wrote."""
    for part in key.split("."):
        config = config[part] if isinstance(config, Mapping) else getattr(config, part)
    return config


def _set(config: Any, path: list[str], text: str, key: str) -> Any:
    head, rest = path[0], path[1:]
    if rest:
        return dataclasses.replace(config, **{head: _set(getattr(config, head), rest, text, key)})
    hint = typing.get_type_hints(type(config)).get(head, Any)
    return dataclasses.replace(config, **{head: convert(text, hint, key)})


def convert(text: str, hint: Any, key: str = "value") -> Any:
    """``text`` as a value of type ``hint``: bool, int, float, str, a Literal, an optional
    (``none``), a tuple or list of those; anything else from its Python literal form."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in _NONE_WORDS:
            return None
        arms = [a for a in args if a is not type(None)]
        errors = []
        for arm in arms:
            try:
                return convert(text, arm, key)
            except OverrideError as e:
                errors.append(str(e))
        raise OverrideError(errors[0] if len(errors) == 1 else
                            f"override {key!r}: {text!r} fits none of {_type_name(hint)}")
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise OverrideError(f"override {key!r}: {text!r} is not one of "
                            f"{', '.join(map(str, args))}")
    if origin in (tuple, list):
        items = _items(text)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            values = [convert(item, args[0], key) for item in items]
        elif origin is tuple and args:
            if len(items) != len(args):
                raise OverrideError(f"override {key!r}: {len(args)} values wanted, "
                                    f"got {len(items)}")
            values = [convert(item, arm, key) for item, arm in zip(items, args, strict=True)]
        else:
            values = [convert(item, args[0] if args else Any, key) for item in items]
        return tuple(values) if origin is tuple else values
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise OverrideError(f"override {key!r}: {text!r} is not true or false")
    if hint in (int, float):
        try:
            number = float(text) if hint is float else int(text)
        except ValueError:
            raise OverrideError(f"override {key!r}: {text!r} is not {_type_name(hint)}"
                                ) from None
        return number
    if hint is str or hint is Any:
        return text
    if dataclasses.is_dataclass(hint):
        raise OverrideError(f"override {key!r} is a group: set one of its fields "
                            f"({', '.join(f.name for f in dataclasses.fields(hint))})")
    raise OverrideError(f"override {key!r}: a field of type {_type_name(hint)} cannot be set "
                        "from the command line")


def _items(text: str) -> list[str]:
    inner = text.strip()
    if inner[:1] in "[(" and inner[-1:] in "])":
        inner = inner[1:-1]
    return [item.strip() for item in inner.split(",") if item.strip()]


def _type_name(hint: Any) -> str:
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    return getattr(hint, "__name__", None) or str(hint)
