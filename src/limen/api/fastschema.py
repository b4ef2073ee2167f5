"""A compiled yes/no check of a document against a CRD's JSON Schema, for the valid-document
fast path of :func:`limen.api.schemas.schema_errors`.

jsonschema walks a schema through a validator object per sub-schema and keyword; for the
common case — a valid document, where there is nothing to report — that walk was the largest
cost of validating a 10,000-object Git repository. :func:`compile_schema` turns a schema into
nested closures that answer exactly "would jsonschema (draft 4) find no error?" for the
keywords the CRDs use: ``type``, ``properties``, ``additionalProperties``, ``required``,
``enum`` (scalars), ``pattern``, ``minLength``, ``maxLength``, ``minItems``,
``maxProperties``, ``minimum``, ``items`` (one schema), ``oneOf`` and ``format`` (with the
caller's format parsers), ignoring ``description`` and ``default``. A schema using anything
else compiles to ``None`` and jsonschema is used for every document. When the check says
"invalid", ``schema_errors`` runs jsonschema for the exact errors, so messages are unchanged.

Pure code; called by ``limen.api.schemas``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

from limen.errors import BadParameter

__all__ = ["Check", "compile_schema"]

Check = Callable[[Any], bool]
_IGNORED = frozenset({"description", "default"})
_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, numbers.Number) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
_SCALARS = (str, int, float, bool, type(None))


class _Unsupported(Exception):
    pass


def compile_schema(schema: Mapping[str, Any],
                   formats: Mapping[str, Callable[[str], object]] | None = None) -> Check | None:
    """The check for ``schema``, or None when it uses a keyword this module does not know."""
    try:
        return _compile(schema, dict(formats or {}))
    except _Unsupported:
        return None


def _compile(schema: Mapping[str, Any], formats: dict[str, Callable[[str], object]]) -> Check:
    if not isinstance(schema, Mapping):
        raise _Unsupported
    checks: list[Check] = []
    done = set(_IGNORED)
    if "type" in schema:
        checks.append(_type(schema["type"]))
        done.add("type")
    if {"properties", "additionalProperties", "required", "maxProperties"} & schema.keys():
        checks.append(_object(schema, formats))
        done |= {"properties", "additionalProperties", "required", "maxProperties"}
    for keyword, build in _SIMPLE.items():
        if keyword in schema:
            checks.append(build(schema[keyword]))
            done.add(keyword)
    if "items" in schema:
        checks.append(_items(schema["items"], formats))
        done.add("items")
    if "oneOf" in schema:
        checks.append(_one_of(schema["oneOf"], formats))
        done.add("oneOf")
    if "format" in schema:
        checks.append(_format(schema["format"], formats))
        done.add("format")
    if set(schema) - done:
        raise _Unsupported
    if len(checks) == 1:
        return checks[0]

    def every(value: Any) -> bool:
        return all(check(value) for check in checks)

    return every


def _type(spec: Any) -> Check:
    names = spec if isinstance(spec, list) else [spec]
    if not names or any(n not in _TYPES for n in names):
        raise _Unsupported
    tests = [_TYPES[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(test(v) for test in tests)


def _object(schema: Mapping[str, Any], formats: dict[str, Callable[[str], object]]) -> Check:
    properties = {name: _compile(child, formats)
                  for name, child in (schema.get("properties") or {}).items()}
    extra_spec = schema.get("additionalProperties", True)
    closed = extra_spec is False
    extra = None if isinstance(extra_spec, bool) else _compile(extra_spec, formats)
    required = list(schema.get("required") or [])
    most = schema.get("maxProperties")
    if most is not None and not isinstance(most, int):
        raise _Unsupported

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for key, item in value.items():
            child = properties.get(key)
            if child is not None:
                if not child(item):
                    return False
            elif closed or (extra is not None and not extra(item)):
                return False
        for name in required:
            if name not in value:
                return False
        return most is None or len(value) <= most

    return check


def _enum(values: Any) -> Check:
    if not isinstance(values, list) or not all(isinstance(v, _SCALARS) for v in values):
        raise _Unsupported

    def same(expected: Any, value: Any) -> bool:  # jsonschema's equality: True is not 1
        if isinstance(expected, bool) or isinstance(value, bool):
            return isinstance(expected, bool) and isinstance(value, bool) and expected == value
        if isinstance(value, (list, dict)):
            return False
        return bool(expected == value)

    return lambda v: any(same(e, v) for e in values)


def _pattern(text: Any) -> Check:
    if not isinstance(text, str):
        raise _Unsupported
    regex = re.compile(text)
    return lambda v: not isinstance(v, str) or regex.search(v) is not None


def _bound(kind: type, test: Callable[[Any, Any], bool]) -> Callable[[Any], Check]:
    def build(limit: Any) -> Check:
        if not isinstance(limit, (int, float)) or isinstance(limit, bool):
            raise _Unsupported
        if kind is numbers.Number:
            is_number = _TYPES["number"]
            return lambda v: not is_number(v) or test(v, limit)
        return lambda v: not isinstance(v, kind) or test(v, limit)
    return build


_SIMPLE: dict[str, Callable[[Any], Check]] = {
    "enum": _enum,
    "pattern": _pattern,
    "minLength": _bound(str, lambda v, n: len(v) >= n),
    "maxLength": _bound(str, lambda v, n: len(v) <= n),
    "minItems": _bound(list, lambda v, n: len(v) >= n),
    "maxItems": _bound(list, lambda v, n: len(v) <= n),
    "minimum": _bound(numbers.Number, lambda v, n: v >= n),
}


def _items(spec: Any, formats: dict[str, Callable[[str], object]]) -> Check:
    child = _compile(spec, formats)  # a list of schemas (tuple validation) is unsupported

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        return all(child(item) for item in value)

    return check


def _one_of(specs: Any, formats: dict[str, Callable[[str], object]]) -> Check:
    if not isinstance(specs, list) or not specs:
        raise _Unsupported
    subs = [_compile(spec, formats) for spec in specs]
    return lambda v: sum(1 for sub in subs if sub(v)) == 1


def _format(name: Any, formats: dict[str, Callable[[str], object]]) -> Check:
    parse = formats.get(name)
    if parse is None:  # jsonschema's checker ignores formats it was not given
        return lambda v: True

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        try:
            parse(value)
        except BadParameter:
            return False
        return True

    return check
