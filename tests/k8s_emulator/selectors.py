"""Label and field selectors as the Kubernetes API parses them, for the API emulator.

Used by ``apiserver.py`` for ``?labelSelector=`` and ``?fieldSelector=`` on list,
watch and delete-collection requests.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``,
comma-separated (all must hold). ``!=`` and ``notin`` also match objects without the label, as
in Kubernetes. Field selectors: ``f=v``, ``f==v``, ``f!=v`` over the fields the resource type
supports (``metadata.name`` and ``metadata.namespace`` everywhere); others are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["SelectorError", "parse_field_selector", "parse_label_selector"]

Predicate = Callable[[Mapping[str, Any]], bool]

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_EQUALITY = re.compile(rf"\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*")
_SET = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*")
_EXISTS = re.compile(rf"\s*(!?)\s*({_KEY})\s*")
_VALUE_ONLY = re.compile(rf"\s*({_VALUE})\s*")


class SelectorError(ValueError):
    """The selector does not parse (the API server answers 400 Bad Request)."""


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _requirement(text: str) -> Predicate:
    if m := _SET.fullmatch(text):
        key, op, raw = m.groups()
        values = set()
        for item in raw.split(","):
            v = _VALUE_ONLY.fullmatch(item)
            if v is None:
                raise SelectorError(f"unable to parse requirement: invalid value {item.strip()!r}")
            values.add(v.group(1))
        if op == "in":
            return lambda obj: _labels(obj).get(key) in values
        return lambda obj: _labels(obj).get(key) not in values
    if m := _EQUALITY.fullmatch(text):
        key, op, value = m.groups()
        if op == "!=":
            return lambda obj: _labels(obj).get(key) != value
        return lambda obj: _labels(obj).get(key) == value
    if m := _EXISTS.fullmatch(text):
        negated, key = m.groups()
        if negated:
            return lambda obj: key not in _labels(obj)
        return lambda obj: key in _labels(obj)
    raise SelectorError(f"unable to parse requirement: {text.strip()!r}")


def parse_label_selector(selector: str | None) -> Predicate:
    """A predicate over objects for a ``labelSelector`` (empty or None matches everything)."""
    requirements = [_requirement(part) for part in _split(selector or "")]
    return lambda obj: all(req(obj) for req in requirements)


def _field(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in ("source.component" if path == "source" else path).split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return "" if node is None else str(node)


def parse_field_selector(selector: str | None, supported: Collection[str]) -> Predicate:
    """A predicate for a ``fieldSelector``; fields outside ``supported`` are a SelectorError."""
    checks: list[tuple[str, bool, str]] = []
    for part in _split(selector or ""):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if m is None:
            raise SelectorError(f"invalid field selector: {part.strip()!r}")
        field, op, value = m.groups()
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        checks.append((field, op != "!=", value))
    return lambda obj: all((_field(obj, f) == v) is eq for f, eq, v in checks)
