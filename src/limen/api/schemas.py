"""The CRD files under ``crds/``: the one source of the public kinds' schemas, read from Python.

``load_crd`` returns a kind's CustomResourceDefinition, ``spec_schema`` the openAPIV3Schema of
its storage version, and ``json_schema`` the same schema converted to JSON Schema for the
``jsonschema`` package. ``schema_errors`` validates a document with it and translates each
failure into a field path and one readable reason.

The conversion turns the OpenAPI/Kubernetes dialect into plain JSON Schema (draft 4, whose
boolean ``exclusiveMinimum`` matches OpenAPI 3.0): ``nullable`` widens ``type``,
``x-kubernetes-int-or-string`` becomes ``[integer, string]``, ``x-kubernetes-list-type: set``
becomes ``uniqueItems``, other ``x-kubernetes-*`` keys are dropped (their CEL rules are
mirrored by ``limen.api.validation``), and objects with ``properties`` get
``additionalProperties: false`` unless they preserve unknown fields — the API server prunes
unknown fields, Limen rejects them.

``with_defaults`` fills in a spec's CRD defaults (``enabled: true``, ``replicas: 1``...).

The CRDs are found in the installed package (``limen/crds``, force-included in wheels) or,
in an editable install, in the repository's ``crds/``. Read once and cached.
Called by ``limen.api.validation``, the operator (to register the CRDs) and the tests.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.resources
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from limen.api.fastschema import Check, compile_schema
from limen.api.loader import FieldPath
from limen.api.resources import API_GROUP, PUBLIC_KINDS, Kind
from limen.errors import BadParameter

__all__ = [
    "CRD_API_VERSION",
    "SchemaError",
    "crd_dir",
    "crd_path",
    "describe",
    "json_schema",
    "load_crd",
    "schema_errors",
    "spec_schema",
    "to_json_schema",
    "with_defaults",
]

CRD_API_VERSION = "apiextensions.k8s.io/v1"

class SchemaError(NamedTuple):
    """One schema violation: where (mapping keys and list indexes) and why."""

    path: FieldPath
    reason: str
    keyword: str


@functools.cache
def crd_dir() -> Path:
    """The directory holding ``limen.dev_<plural>.yaml`` files."""
    packaged = importlib.resources.files("limen") / "crds"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "crds"


def crd_path(kind: Kind | str) -> Path:
    return crd_dir() / f"{API_GROUP}_{_public_kind(kind).plural}.yaml"


def load_crd(kind: Kind | str) -> dict[str, Any]:
    """The CustomResourceDefinition of a public kind (a fresh copy)."""
    return copy.deepcopy(_crd(_public_kind(kind)))


def spec_schema(kind: Kind | str) -> dict[str, Any]:
    """The openAPIV3Schema of the kind's storage version (a fresh copy)."""
    return copy.deepcopy(_openapi(_public_kind(kind)))


def json_schema(kind: Kind | str) -> dict[str, Any]:
    """The kind's schema as JSON Schema (draft 4), see :func:`to_json_schema`."""
    return copy.deepcopy(_json_schema(_public_kind(kind)))


def schema_errors(
    kind: Kind | str,
    document: Mapping[str, Any],
    formats: Mapping[str, Callable[[str], object]] | None = None,
) -> list[SchemaError]:
    """Every violation of the kind's schema in ``document``, sorted by path.

    ``formats`` maps a ``format`` name (e.g. ``duration``) to a parser that raises
    :class:`BadParameter` for invalid text; its message becomes the reason.
    """
    accept = _fast_check(_public_kind(kind), tuple(sorted((formats or {}).items())))
    if accept is not None and accept(document):
        return []  # valid: nothing to report (the fast path of limen.api.fastschema)
    checker = FormatChecker(formats=())
    for name, parse in (formats or {}).items():
        checker.checks(name, raises=BadParameter)(_format_check(parse))
    validator = Draft4Validator(_json_schema(_public_kind(kind)), format_checker=checker)
    found: list[SchemaError] = []
    for error in validator.iter_errors(document):
        found.extend(_translate(error))
    return _prefer_clear(sorted(found, key=lambda e: ([str(p) for p in e.path], e.reason)))


def with_defaults(kind: Kind | str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with the CRD's ``default`` values filled in, as the API server does.

    Like Kubernetes, a default applies to a missing field of an object that is present:
    ``proxy: {}`` gets ``replicas: 1``, an absent ``proxy`` stays absent. Validation does not
    default (a declaration round-trips unchanged); readers of a spec call this instead of
    repeating the defaults.
    """
    schema = _openapi(_public_kind(kind))["properties"]["spec"]
    filled: dict[str, Any] = _fill_defaults(schema, copy.deepcopy(dict(spec)))
    return filled


def _fill_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name, child in properties.items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _fill_defaults(child, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in value:
                if name not in properties:
                    value[name] = _fill_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_fill_defaults(schema["items"], item) for item in value]
    return value


def to_json_schema(node: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one OpenAPI v3 (Kubernetes structural) schema node to JSON Schema, recursively."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(child) for child in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string") is True:
        out["type"] = ["integer", "string"]
        out.pop("anyOf", None)  # the [{type: integer}, {type: string}] spelling of the same
    if node.get("nullable") is True and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _public_kind(kind: Kind | str) -> Kind:
    try:
        value = Kind(kind)
    except ValueError:
        raise BadParameter(f"unknown kind {kind!r}") from None
    if value not in PUBLIC_KINDS:
        raise BadParameter(f"{value.value} is an internal kind and has no CRD")
    return value


@functools.cache
def _crd(kind: Kind) -> dict[str, Any]:
    path = crd_path(kind)
    try:
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BadParameter(f"cannot read the {kind.value} CRD {path}: {err}") from err
    if not isinstance(crd, dict) or crd.get("apiVersion") != CRD_API_VERSION:
        raise BadParameter(f"{path} is not a {CRD_API_VERSION} CustomResourceDefinition")
    return crd


@functools.cache
def _openapi(kind: Kind) -> dict[str, Any]:
    versions = _crd(kind)["spec"]["versions"]
    stored = next((v for v in versions if v.get("storage")), None)
    if stored is None:
        raise BadParameter(f"the {kind.value} CRD has no storage version")
    schema: dict[str, Any] = stored["schema"]["openAPIV3Schema"]
    return schema


@functools.lru_cache(maxsize=64)
def _fast_check(kind: Kind,
                formats: tuple[tuple[str, Callable[[str], object]], ...]) -> Check | None:
    return compile_schema(_json_schema(kind), dict(formats))


@functools.cache
def _json_schema(kind: Kind) -> dict[str, Any]:
    schema = to_json_schema(_openapi(kind))
    Draft4Validator.check_schema(schema)
    return schema


def _format_check(parse: Callable[[str], object]) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if isinstance(value, str):
            parse(value)  # raises BadParameter with the reason
        return True

    return check


# -- translating jsonschema errors into one reason per field ---------------------------------

_TYPE_NAMES = {
    "string": "a string", "boolean": "a boolean (true or false)", "integer": "an integer",
    "number": "a number", "array": "a list", "object": "a mapping", "null": "null",
}


def describe(value: object) -> str:
    """A short description of a YAML value for error messages: ``'dev'``, ``a list``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(error: ValidationError) -> list[SchemaError]:
    path: FieldPath = tuple(error.absolute_path)
    keyword = str(error.validator)
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.validator_value
    instance = error.instance
    if keyword == "required":
        missing = [
            name for name in value
            if isinstance(instance, dict) and name not in instance
            and error.message.startswith(repr(name))
        ]
        return [SchemaError((*path, name), "required field is missing", keyword)
                for name in missing[:1]]
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        return [
            SchemaError((*path, name), "unknown field" + _did_you_mean(str(name), known), keyword)
            for name in instance if name not in known
        ]
    return [SchemaError(path, _reason(keyword, value, instance, schema, error), keyword)]


def _reason(
    keyword: str, value: Any, instance: Any, schema: Mapping[str, Any], error: ValidationError
) -> str:
    if keyword == "type":
        types = value if isinstance(value, list) else [value]
        expected = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        return f"expected {expected}, got {describe(instance)}"
    if keyword == "enum":
        return f"{describe(instance)} is not one of: {', '.join(str(v) for v in value)}"
    if keyword == "format" and isinstance(error.cause, BadParameter):
        return str(error.cause)
    if keyword == "pattern":
        hint = schema.get("description")
        return (f"{describe(instance)} is not valid here: {hint}" if hint
                else f"{describe(instance)} does not match {value!r}")
    if keyword in ("minItems", "minLength") and value == 1:
        return "must not be empty"
    if keyword == "minItems":
        return f"must have at least {value} items"
    if keyword == "maxItems":
        return f"must have at most {value} items"
    if keyword == "minLength":
        return f"must be at least {value} characters long"
    if keyword == "maxLength":
        return f"must be at most {value} characters long"
    if keyword == "minimum":
        return f"must be at least {value}"
    if keyword == "maximum":
        return f"must be at most {value}"
    if keyword == "uniqueItems":
        return "has duplicate items"
    if keyword in ("oneOf", "anyOf") and all(
        isinstance(branch, Mapping) and "required" in branch for branch in value
    ):
        choices = " | ".join("{" + ", ".join(branch["required"]) + "}" for branch in value)
        return f"set exactly one of {choices}"
    return str(error.message)


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _prefer_clear(errors: list[SchemaError]) -> list[SchemaError]:
    """Drop errors that repeat a clearer one at the same path.

    A failed ``format`` explains a failed ``pattern`` (durations); a wrong type or an unknown
    field inside a reference object explains why none of its ``oneOf`` shapes matched.
    """
    keywords: dict[FieldPath, set[str]] = {}
    for error in errors:
        keywords.setdefault(error.path, set()).add(error.keyword)
    children_unknown = {e.path[:-1] for e in errors if e.keyword == "additionalProperties"}

    def redundant(error: SchemaError) -> bool:
        at = keywords[error.path]
        if error.keyword == "pattern":
            return "format" in at
        if error.keyword in ("oneOf", "anyOf"):
            return "type" in at or error.path in children_unknown
        return False

    return [e for e in errors if not redundant(e)]
