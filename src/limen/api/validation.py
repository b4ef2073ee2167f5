"""Validate declared resource documents: the envelope, the CRD schema and Limen's semantics.

``validate`` checks a whole batch (every document of a Git tree, an ``lmctl apply -f DIR``, an
API body) and either returns all of it as :class:`Resource` objects or raises one
:class:`ValidationFailed` listing every problem, each as ``file[index] (line N) path: reason``::

    SourceDocument ──▶ envelope (apiVersion, kind, metadata) ──▶ CRD schema (schemas.py)
                   ──▶ semantics: label values, regexps, trait templates, per-kind rules,
                       literal secrets ──▶ duplicates across the batch ──▶ Resource

The semantic checks are what a structural schema cannot say: a label value is a string or a
list of strings, ``^...$`` values compile, ``{{...}}`` templates parse, rules' ``where``
conditions parse (``limen.api.predicates``), durations are positive,
kind-specific Resource fields (the CRDs' CEL rules, mirrored here), and no document carries a
literal secret — by field name, or by content in any value or key: private keys, GitHub/AWS/
Slack/Google tokens, JWTs (``limen.api.secret_scan``) — where a ``*_ref`` reference belongs.
Null fields in ``spec`` are dropped, as the API server does. ``status`` is Limen's, and only
has to be a mapping.
An optional ``spec.name`` (User, Role, TrustedCluster, Resource) names the object in Limen
instead of ``metadata.name``: Kubernetes names cannot hold the ``@`` of e-mail user names.

Called by ``lmctl``, the Git sync, the auth API and the operator. ``parse_duration`` lives in
``limen.api.durations`` and is re-exported here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from limen.api.access_request_review import GIT_ONLY
from limen.api.durations import parse_duration
from limen.api.github_connector import github_connector_problems
from limen.api.loader import FieldPath, SourceDocument
from limen.api.lock import lock_problems
from limen.api.oidc_connector import oidc_connector_problems
from limen.api.predicates import parse_where
from limen.api.resources import API_VERSION, NAME_PATTERN, PUBLIC_KINDS, Kind, Resource
from limen.api.rotation_request import rotation_request_problems
from limen.api.schemas import describe, schema_errors
from limen.api.secret_scan import SECRET_HINT, find_secrets
from limen.api.templates import is_template, parse_template
from limen.errors import BadParameter, DocumentError, ValidationFailed

__all__ = [
    "LABEL_FIELDS",
    "RESOURCE_FIELD_KINDS",
    "RESOURCE_KINDS",
    "RESOURCE_REQUIRED_FIELDS",
    "SECRET_HINT",
    "format_path",
    "parse_duration",
    "validate",
]

LABEL_FIELDS = ("node_labels", "kubernetes_labels", "db_labels", "app_labels", "cluster_labels")
"""Role label maps (``allow``/``deny``): values are strings or lists of strings."""
RESOURCE_KINDS = ("ssh", "db", "kube", "app")
"""Values of a Resource's ``spec.kind``."""
RESOURCE_FIELD_KINDS = {
    "hostname": "ssh", "protocol": "db", "database": "db", "admin_user": "db", "uri": "app",
    "public_addr": "app",
    "rewrite": "app", "kubeconfig_ref": "kube",
}
"""Resource spec fields that only apply to one ``spec.kind`` (the CRD's CEL rules)."""
RESOURCE_REQUIRED_FIELDS = {"db": ("protocol", "address"), "app": ("uri",)}
"""Resource spec fields a ``spec.kind`` requires (the CRD's CEL rules)."""
RESOURCE_PROTOCOL_FIELDS = {"mysql": "mysql"}
"""Resource spec fields that only apply to a db of one ``spec.protocol`` (CEL rules too)."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_*@-]+")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PUBLIC_KIND_NAMES = ", ".join(k.value for k in PUBLIC_KINDS)

Problem = tuple[FieldPath, str]




def format_path(path: Sequence[str | int]) -> str:
    """``("spec", "role_map", 1, "remote")`` → ``spec.role_map[1].remote``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def validate(docs: Sequence[SourceDocument]) -> list[Resource]:
    """Check every document; return them as Resources, or raise ValidationFailed with all errors."""
    errors: list[DocumentError] = []
    resources: list[Resource] = []
    first_seen: dict[tuple[Kind, str], SourceDocument] = {}
    for doc in docs:
        problems, resource, identity = _check(doc)
        if identity is not None:
            first = first_seen.setdefault(identity, doc)
            if first is not doc:
                kind, name = identity
                problems.append((
                    ("metadata", "name"),
                    f"duplicate {kind.value}/{name}: already declared in {first.source}"
                    f"[{first.index}] (line {first.line})",
                ))
        problems.sort(key=lambda p: doc.line_of(p[0]))
        errors.extend(
            DocumentError(doc.source, doc.index, format_path(path), reason, doc.line_of(path))
            for path, reason in problems
        )
        if resource is not None and not problems:
            resources.append(resource)
    if errors:
        raise ValidationFailed(errors)
    return resources


def _check(doc: SourceDocument) -> tuple[list[Problem], Resource | None, tuple[Kind, str] | None]:
    """One document's problems, its Resource when valid, and its (kind, name) when known."""
    data = doc.data
    problems: list[Problem] = []
    if "apiVersion" not in data:
        problems.append((("apiVersion",), f"required field is missing (use {API_VERSION})"))
    elif data["apiVersion"] != API_VERSION:
        got = describe(data["apiVersion"])
        problems.append((("apiVersion",), f"expected {API_VERSION!r}, got {got}"))
    found = find_secrets(data)  # by name and by content, in every value and key
    secrets = [f.path for f in found]
    problems.extend((f.path, f.reason) for f in found)
    kind = _kind(data, problems)
    name = _metadata(data, problems)
    spec = _without_nulls(data["spec"]) if isinstance(data.get("spec"), dict) else data.get("spec")
    if "status" in data and not isinstance(data["status"], dict):
        problems.append((("status",), f"expected a mapping, got {describe(data['status'])}"))
    if kind is not None:
        checked = {k: v for k, v in data.items() if k not in ("metadata", "status", "spec")}
        if spec is not None:  # ``spec:`` with nothing under it is missing, as for the API server
            checked["spec"] = spec
        for error in schema_errors(kind, checked, {"duration": parse_duration}):
            if not _under(error.path, secrets):
                problems.append((error.path, error.reason))
        if isinstance(spec, dict):
            problems.extend(_SEMANTICS[kind](spec))
    # No other message may quote a secret's value (a label value check, a regexp check).
    reported = {(f.path, f.reason) for f in found}
    problems = [p for p in problems if p in reported or not _under(p[0], secrets)]
    name = _limen_name(spec, name)
    identity = (kind, name) if kind is not None and name is not None else None
    if problems or kind is None or name is None:
        return problems, None, identity
    return problems, Resource.from_document({**data, "spec": spec}).replace(name=name), identity


def _under(path: FieldPath, secrets: Sequence[FieldPath]) -> bool:
    return any(tuple(path[: len(s)]) == tuple(s) for s in secrets)


def _limen_name(spec: Any, metadata_name: str | None) -> str | None:
    """The object's name in Limen: ``spec.name`` when given (user names that are e-mail
    addresses, names chosen apart from the Kubernetes object's), else ``metadata.name``."""
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        chosen: str = spec["name"]
        return chosen if NAME_PATTERN.fullmatch(chosen) else None
    return metadata_name


def _kind(data: Mapping[str, Any], problems: list[Problem]) -> Kind | None:
    value = data.get("kind")
    if value is None:
        problems.append((("kind",), f"required field is missing (one of {_PUBLIC_KIND_NAMES})"))
        return None
    if not isinstance(value, str) or value not in {k.value for k in Kind}:
        problems.append(
            (("kind",), f"unknown kind {describe(value)} (expected one of {_PUBLIC_KIND_NAMES})")
        )
        return None
    kind = Kind(value)
    if kind is Kind.ACCESS_REQUEST_REVIEW:
        problems.append((("kind",), GIT_ONLY))
        return None
    if kind not in PUBLIC_KINDS:
        problems.append((("kind",), f"{kind.value} objects are internal and cannot be declared"))
        return None
    return kind


def _metadata(data: Mapping[str, Any], problems: list[Problem]) -> str | None:
    """Check metadata; return the name when it is valid."""
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        if meta is None:
            problems.append((("metadata",), "required field is missing"))
        else:
            problems.append((("metadata",), f"expected a mapping, got {describe(meta)}"))
        return None
    for field in ("labels", "annotations"):
        problems.extend(_string_map(meta.get(field), ("metadata", field), labels=field == "labels"))
    name = meta.get("name")
    if name is None:
        problems.append((("metadata", "name"), "required field is missing"))
    elif not isinstance(name, str):
        problems.append((("metadata", "name"), f"expected a string, got {describe(name)}"))
    elif not NAME_PATTERN.fullmatch(name):
        problems.append((
            ("metadata", "name"),
            f"{name!r} is not a valid name (lowercase letters, digits, '.', '-', '_' and '@', "
            "starting and ending with a letter or digit, at most 253 characters)",
        ))
    else:
        return name
    return None


def _string_map(value: Any, path: FieldPath, *, labels: bool) -> Iterator[Problem]:
    """metadata.labels / annotations: strings to strings, labels in Kubernetes syntax."""
    if value is None:
        return
    if not isinstance(value, dict):
        yield path, f"expected a mapping, got {describe(value)}"
        return
    for key, item in value.items():
        if not isinstance(item, str):
            yield (*path, str(key)), f"expected a string, got {describe(item)} (quote it)"
        elif labels and not _valid_label_key(str(key)):
            yield (*path, str(key)), (
                "is not a valid label key ([prefix/]name, the name at most 63 characters)"
            )
        elif labels and item and (len(item) > 63 or not _LABEL_NAME.fullmatch(item)):
            yield (*path, str(key)), (
                f"{item!r} is not a valid label value (at most 63 letters, digits, '-', '_', '.')"
            )


def _valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# -- per-kind semantics ------------------------------------------------------------------------


def _role(spec: Mapping[str, Any]) -> Iterator[Problem]:
    for side in ("allow", "deny"):
        conditions = spec.get(side)
        if not isinstance(conditions, dict):
            continue
        for key, value in conditions.items():
            path: FieldPath = ("spec", side, key)
            if key in LABEL_FIELDS and isinstance(value, dict):
                yield from _labels(value, path)
            elif key == "kubernetes_resources" and isinstance(value, list):
                for position, item in enumerate(value):
                    for field in ("name", "namespace"):
                        if isinstance(item, dict) and isinstance(item.get(field), str):
                            yield from _value(item[field], (*path, position, field))
            elif key == "rules" and isinstance(value, list):
                yield from _rules(value, path)
            elif key in ("request", "review_requests") and isinstance(value, dict):
                yield from _role_patterns(value.get("roles"), (*path, "roles"))
            elif isinstance(value, list):
                for position, item in enumerate(value):
                    if isinstance(item, str):
                        yield from _template(item, (*path, position))


def _role_patterns(patterns: Any, path: FieldPath) -> Iterator[Problem]:
    """Role names of access requests: literal, glob or anchored regular expression."""
    for position, item in enumerate(patterns if isinstance(patterns, list) else []):
        if isinstance(item, str):
            yield from _regexp(item, (*path, position))


def _rules(rules: Sequence[Any], path: FieldPath) -> Iterator[Problem]:
    """Each rule's ``where`` parses and type-checks (``limen.api.predicates``)."""
    for position, rule in enumerate(rules):
        where = rule.get("where") if isinstance(rule, dict) else None
        if isinstance(where, str):
            try:
                parse_where(where)
            except BadParameter as err:
                yield (*path, position, "where"), f"{where!r}: {err}"


def _labels(labels: Mapping[str, Any], path: FieldPath) -> Iterator[Problem]:
    for key, value in labels.items():
        at = (*path, key)
        yield from _template(str(key), at)
        if isinstance(value, str):
            yield from _value(value, at)
        elif isinstance(value, list):
            for position, item in enumerate(value):
                if isinstance(item, str):
                    yield from _value(item, (*at, position))
                else:
                    yield (*at, position), f"expected a string, got {describe(item)}"
        else:
            yield at, f"expected a string or a list of strings, got {describe(value)}"


def _value(text: str, path: FieldPath) -> Iterator[Problem]:
    """A matcher value: literal, glob, ``^...$`` regular expression, or trait template."""
    problems = list(_template(text, path))
    yield from problems
    if problems:
        return
    yield from _regexp(text, path)


def _template(text: str, path: FieldPath) -> Iterator[Problem]:
    if is_template(text):
        try:
            parse_template(text)
        except BadParameter as err:
            yield path, str(err)


def _regexp(text: str, path: FieldPath) -> Iterator[Problem]:
    if not (text.startswith("^") or text.endswith("$")):
        return
    template = parse_template(text)
    pattern = f"{template.prefix}x{template.suffix}" if template else text
    try:
        re.compile(pattern)
    except re.error:
        yield path, f"{text!r} is not a valid regular expression"
        return
    if not (text.startswith("^") and text.endswith("$")):
        yield path, f"{text!r} looks like a regular expression but is not anchored: write ^...$"


def _user(spec: Mapping[str, Any]) -> Iterator[Problem]:
    return iter(())


def _trusted_cluster(spec: Mapping[str, Any]) -> Iterator[Problem]:
    role_map = spec.get("role_map")
    for position, item in enumerate(role_map if isinstance(role_map, list) else []):
        if isinstance(item, dict) and isinstance(item.get("remote"), str):
            yield from _regexp(item["remote"], ("spec", "role_map", position, "remote"))


def _resource(spec: Mapping[str, Any]) -> Iterator[Problem]:
    kind = spec.get("kind")
    if kind not in RESOURCE_KINDS:  # the schema reports it
        return
    for field in RESOURCE_REQUIRED_FIELDS.get(kind, ()):
        if field not in spec:
            yield ("spec", field), f"required for kind {kind}"
    for field, only in RESOURCE_FIELD_KINDS.items():
        if field in spec and kind != only:
            yield ("spec", field), f"only applies to kind {only}, not {kind}"
    for field, protocol in RESOURCE_PROTOCOL_FIELDS.items():
        if field in spec and spec.get("protocol") != protocol:
            yield ("spec", field), f"only applies to a db resource with protocol {protocol}"


def _cluster(spec: Mapping[str, Any]) -> Iterator[Problem]:
    yield from rotation_request_problems(spec)
    backend = spec.get("backend")
    if not isinstance(backend, dict):
        return
    if backend.get("type") == "postgres" and not (
        "dsn_secret_ref" in backend or "postgres" in backend
    ):
        yield ("spec", "backend", "dsn_secret_ref"), "required for a postgres backend"
    if "postgres" in backend and backend.get("type", "postgres") != "postgres":
        yield ("spec", "backend", "type"), "postgres is a PostgreSQL backend; drop type sqlite"
    if "postgres" in backend and "dsn_secret_ref" in backend:
        yield (("spec", "backend", "dsn_secret_ref"),
               "give the connection string once, in postgres.dsnSecretRef")


_SEMANTICS = {
    Kind.ROLE: _role,
    Kind.USER: _user,
    Kind.TRUSTED_CLUSTER: _trusted_cluster,
    Kind.RESOURCE: _resource,
    Kind.CLUSTER: _cluster,
    Kind.LOCK: lock_problems,
    Kind.OIDC_CONNECTOR: oidc_connector_problems,
    Kind.GITHUB_CONNECTOR: github_connector_problems,
}
