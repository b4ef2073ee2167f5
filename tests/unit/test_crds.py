"""The CRD files: apiextensions v1, structural schemas, and in step with the Python code."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator

from limen.api.resources import API_GROUP, PUBLIC_KINDS, Kind, parse_kind
from limen.api.schemas import (
    crd_dir,
    crd_path,
    json_schema,
    load_crd,
    spec_schema,
    to_json_schema,
    with_defaults,
)
from limen.api.validation import (
    LABEL_FIELDS,
    RESOURCE_FIELD_KINDS,
    RESOURCE_KINDS,
    RESOURCE_PROTOCOL_FIELDS,
    RESOURCE_REQUIRED_FIELDS,
    parse_duration,
)
from limen.errors import BadParameter

SHORT_NAMES = {
    Kind.USER: "lmuser", Kind.ROLE: "lmrole", Kind.TRUSTED_CLUSTER: "lmtc",
    Kind.RESOURCE: "lmres", Kind.CLUSTER: "lmcluster", Kind.LOCK: "lmlock",
    Kind.OIDC_CONNECTOR: "lmoidc", Kind.GITHUB_CONNECTOR: "lmgithub",
}
DOMAIN_COLUMNS = {
    Kind.USER: {"Roles": ".spec.roles"},
    Kind.ROLE: {"Logins": ".spec.allow.logins"},
    Kind.TRUSTED_CLUSTER: {"Enabled": ".spec.enabled", "Proxy": ".spec.proxy_address"},
    Kind.RESOURCE: {"Kind": ".spec.kind", "Address": ".spec.address"},
    Kind.CLUSTER: {"Address": ".spec.public_address"},
    Kind.LOCK: {"Message": ".spec.message", "Expires": ".spec.expires"},
    Kind.OIDC_CONNECTOR: {"Issuer": ".spec.issuer_url", "Client": ".spec.client_id"},
    Kind.GITHUB_CONNECTOR: {"Endpoint": ".spec.endpoint_url", "Client": ".spec.client_id"},
}
CRD_FILES = sorted(crd_dir().glob("*.yaml"))
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


def structural_problems(schema: Mapping[str, Any]) -> list[str]:
    """Kubernetes' structural-schema rules, checked independently of the code under test."""
    problems: list[str] = []

    def visit(node: Any, path: str, outside: Mapping[str, Any] | None = None) -> None:
        if not isinstance(node, Mapping):
            problems.append(f"{path}: not a mapping")
            return
        if "$ref" in node:
            problems.append(f"{path}: $ref is not allowed")
        if outside is None:
            if not (node.get("type") or node.get("x-kubernetes-preserve-unknown-fields") is True
                    or node.get("x-kubernetes-int-or-string") is True):
                problems.append(f"{path}: no type")
        else:  # inside allOf/anyOf/oneOf/not: only value validations on declared fields
            for key in ("type", "description", "default", "additionalProperties", "nullable"):
                if key in node:
                    problems.append(f"{path}: {key} inside a logical junctor")
            for name in node.get("properties", {}):
                if name not in outside.get("properties", {}):
                    problems.append(f"{path}: property {name} not declared outside the junctor")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false is not allowed")
        if "x-kubernetes-preserve-unknown-fields" in node and (
            node["x-kubernetes-preserve-unknown-fields"] is not True
        ):
            problems.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true")
        if "items" in node and not isinstance(node["items"], Mapping):
            problems.append(f"{path}: items must be one schema")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if "default" in node:
            errors = list(Draft4Validator(to_json_schema(node)).iter_errors(node["default"]))
            if errors:
                problems.append(f"{path}: default does not validate: {errors[0].message}")
        for key in node.get("x-kubernetes-list-map-keys", []):
            if key not in node.get("items", {}).get("required", []):
                problems.append(f"{path}: list-map key {key} must be required")
        for name, child in node.get("properties", {}).items():
            inner = None if outside is None else outside.get("properties", {}).get(name, {})
            visit(child, f"{path}.properties.{name}", inner)
        for key in ("additionalProperties", "items"):
            if isinstance(node.get(key), Mapping):
                inner = None if outside is None else outside.get(key) or {}
                visit(node[key], f"{path}.{key}", inner)
        for junctor in JUNCTORS:
            branches = node.get(junctor)
            for i, branch in enumerate([branches] if isinstance(branches, Mapping)
                                       else branches or []):
                visit(branch, f"{path}.{junctor}[{i}]", outside or node)

    visit(schema, "openAPIV3Schema")
    metadata = schema.get("properties", {}).get("metadata", {})
    if metadata.get("type") != "object" or set(metadata.get("properties", {})) - {
        "name", "generateName"
    }:
        problems.append("metadata: must be type object, restricting only name/generateName")
    return problems


def schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(node, Mapping):
        return
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        yield from schema_nodes(node.get(key), f"{path}[{key}]")


@pytest.fixture(params=PUBLIC_KINDS, ids=lambda k: k.value)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


def test_crd_files_are_exactly_the_public_kinds() -> None:
    crds = [yaml.safe_load(p.read_text()) for p in CRD_FILES]
    assert {c["spec"]["names"]["kind"] for c in crds} == {k.value for k in PUBLIC_KINDS}
    assert {p.name for p in CRD_FILES} == {f"{API_GROUP}_{k.plural}.yaml" for k in PUBLIC_KINDS}
    assert crd_dir() == Path(__file__).resolve().parents[2] / "crds"


def test_crd_envelope_names_and_version(kind: Kind) -> None:
    crd = yaml.safe_load(crd_path(kind).read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{kind.plural}.{API_GROUP}"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == (API_GROUP, "Namespaced")
    assert spec["names"] == {
        "kind": kind.value, "listKind": f"{kind.value}List", "plural": kind.plural,
        "singular": kind.value.lower(), "shortNames": [SHORT_NAMES[kind]], "categories": ["limen"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert load_crd(kind) == crd


def test_short_names_are_the_ones_parse_kind_accepts(kind: Kind) -> None:
    names = load_crd(kind)["spec"]["names"]
    for spelling in [*names["shortNames"], names["plural"], names["singular"], names["kind"]]:
        assert parse_kind(spelling) is kind


def test_printer_columns(kind: Kind) -> None:
    columns = load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert (by_name["Age"]["jsonPath"], by_name["Age"]["type"]) == (
        ".metadata.creationTimestamp", "date"
    )
    assert {c["name"]: c["jsonPath"] for c in columns[:-2]} == DOMAIN_COLUMNS[kind]
    paths = {path for path, _ in schema_nodes(spec_schema(kind))}
    for column in columns[:-2]:  # every domain column points at a declared spec field
        assert column["jsonPath"] in paths


def test_every_crd_schema_is_structural(kind: Kind) -> None:
    assert structural_problems(spec_schema(kind)) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"description": "untyped"}}},
         "openAPIV3Schema.properties.a: no type"),
        ({"type": "object", "properties": {"a": {"type": "string"}},
          "additionalProperties": {"type": "string"}},
         "openAPIV3Schema: properties and additionalProperties together"),
        ({"type": "object", "properties": {"a": {"$ref": "#/definitions/x", "type": "object"}}},
         "openAPIV3Schema.properties.a: $ref is not allowed"),
        ({"type": "object", "properties": {"a": {"type": "string"}},
          "anyOf": [{"type": "object"}]},
         "openAPIV3Schema.anyOf[0]: type inside a logical junctor"),
        ({"type": "object", "properties": {"a": {"type": "string"}},
          "oneOf": [{"properties": {"b": {"minLength": 1}}}]},
         "openAPIV3Schema.oneOf[0]: property b not declared outside the junctor"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}},
         "openAPIV3Schema.properties.a: items must be one schema"),
        ({"type": "object", "properties": {"a": {"type": "integer", "default": "one"}}},
         "openAPIV3Schema.properties.a: default does not validate: 'one' is not of type 'integer'"),
        ({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
            "labels": {"type": "object"}}}}},
         "metadata: must be type object, restricting only name/generateName"),
    ],
)
def test_structural_checker_catches_bad_schemas(schema: dict[str, Any], problem: str) -> None:
    assert problem in structural_problems(schema)


def test_spec_rejects_unknown_fields_except_free_form_maps(kind: Kind) -> None:
    """Preserve-unknown-fields appears only on status, label values and pod resources."""
    allowed = re.compile(r"^\.status$|_labels\[additionalProperties\]$|\.resources$")
    for path, node in schema_nodes(spec_schema(kind)):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert allowed.search(path), path


def test_label_fields_in_code_match_the_role_crd() -> None:
    for side in ("allow", "deny"):
        conditions = spec_schema(Kind.ROLE)["properties"]["spec"]["properties"][side]
        free_maps = {
            name for name, node in conditions["properties"].items()
            if node.get("additionalProperties") == {"x-kubernetes-preserve-unknown-fields": True}
        }
        assert free_maps == set(LABEL_FIELDS)


def test_resource_cel_rules_mirror_the_python_checks() -> None:
    spec = spec_schema(Kind.RESOURCE)["properties"]["spec"]
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    for field, only in RESOURCE_FIELD_KINDS.items():
        assert f"self.kind == '{only}' || !has(self.{field})" in rules
    for kind_name, fields in RESOURCE_REQUIRED_FIELDS.items():
        needs = " && ".join(f"has(self.{f})" for f in fields)
        needs = f"({needs})" if len(fields) > 1 else needs
        assert f"self.kind != '{kind_name}' || {needs}" in rules
    for field, protocol in RESOURCE_PROTOCOL_FIELDS.items():
        assert (f"!has(self.{field}) || (has(self.protocol) && self.protocol == '{protocol}')"
                in rules)
    assert len(rules) == len(RESOURCE_FIELD_KINDS) + len(RESOURCE_REQUIRED_FIELDS) + len(
        RESOURCE_PROTOCOL_FIELDS)
    assert tuple(spec["properties"]["kind"]["enum"]) == RESOURCE_KINDS


DURATIONS_OK = ["8h", "30m", "1h30m", "1.5h", "90s", "500ms", "2h0m0s"]
DURATIONS_BAD = ["8 hours", "8", "1d", "-1h", "h", "", "1h 30m", "+1h", "1.h", "8H"]


def test_duration_fields_agree_with_parse_duration() -> None:
    durations = [
        (kind, path, node) for kind in PUBLIC_KINDS
        for path, node in schema_nodes(spec_schema(kind)) if node.get("format") == "duration"
    ]
    assert {p for _, p, _ in durations} >= {
        ".spec.options.max_session_ttl", ".spec.options.client_idle_timeout",
        ".spec.ca_rotation.grace_period", ".spec.gitops.poll_interval",
    }
    for _kind, path, node in durations:
        pattern = re.compile(node["pattern"])
        for text in DURATIONS_OK:
            assert pattern.search(text), (path, text)
            parse_duration(text)
        for text in DURATIONS_BAD:
            assert not pattern.search(text), (path, text)
            with pytest.raises(BadParameter):
                parse_duration(text)
        # "0s" has the right shape; positivity is a CEL rule in Kubernetes, parse_duration here
        assert pattern.search("0s")
        assert node["x-kubernetes-validations"][0]["rule"] == "duration(self) > duration('0s')"
        with pytest.raises(BadParameter):
            parse_duration("0s")


def test_load_crd_returns_a_copy_and_internal_kinds_have_none() -> None:
    load_crd(Kind.ROLE)["spec"]["group"] = "mutated"
    spec_schema(Kind.ROLE)["properties"].clear()
    json_schema(Kind.ROLE)["properties"].clear()
    assert load_crd("Role")["spec"]["group"] == API_GROUP
    assert "spec" in spec_schema(Kind.ROLE)["properties"]
    assert "spec" in json_schema(Kind.ROLE)["properties"]
    with pytest.raises(BadParameter, match="internal kind"):
        load_crd(Kind.TOKEN)
    with pytest.raises(BadParameter, match="unknown kind"):
        spec_schema("Widget")


def test_json_schema_conversion() -> None:
    converted = to_json_schema({
        "type": "object",
        "x-kubernetes-validations": [{"rule": "true"}],
        "properties": {
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"a": {"type": "string"}}},
            "port": {"x-kubernetes-int-or-string": True,
                     "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "maybe": {"type": "string", "nullable": True, "enum": ["a"]},
            "tags": {"type": "array", "x-kubernetes-list-type": "set",
                     "items": {"type": "string"}},
        },
    })
    assert converted == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "closed": {"type": "object", "properties": {"a": {"type": "string"}},
                       "additionalProperties": False},
            "open": {"type": "object", "properties": {"a": {"type": "string"}}},
            "port": {"type": ["integer", "string"]},
            "maybe": {"type": ["string", "null"], "enum": ["a", None]},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
    }
    for kind in PUBLIC_KINDS:
        Draft4Validator.check_schema(json_schema(kind))


def test_with_defaults_fills_missing_fields_of_present_objects_only() -> None:
    spec = {"public_address": "limen.example", "proxy": {"replicas": 3}, "backend": {}}
    assert with_defaults(Kind.CLUSTER, spec) == {
        "public_address": "limen.example",
        "proxy": {"replicas": 3, "service_type": "ClusterIP"},
        "backend": {},  # no default type: backend.postgres alone means PostgreSQL
        "second_factor": "otp",
    }
    assert spec == {"public_address": "limen.example", "proxy": {"replicas": 3}, "backend": {}}
    tc = {"proxy_address": "root:3080", "token_secret_ref": {"env": "LIMEN_SECRET_T"}}
    assert with_defaults(Kind.TRUSTED_CLUSTER, tc)["enabled"] is True
    assert with_defaults(Kind.TRUSTED_CLUSTER, {**tc, "enabled": False})["enabled"] is False
    assert with_defaults(Kind.ROLE, {"allow": {"logins": ["a"]}}) == {"allow": {"logins": ["a"]}}
