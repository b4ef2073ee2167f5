"""``spec.name``: the optional Limen name of User, Role, TrustedCluster and Resource documents
(added for the operator: Kubernetes names cannot hold the ``@`` of e-mail user names)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from limen.api.loader import load_text
from limen.api.resources import Kind
from limen.api.schemas import spec_schema
from limen.api.validation import validate
from limen.errors import ValidationFailed

SPECS: dict[Kind, dict[str, Any]] = {
    Kind.USER: {"roles": ["dev"]},
    Kind.ROLE: {"allow": {"logins": ["ubuntu"]}},
    Kind.TRUSTED_CLUSTER: {"proxy_address": "root.example:3080",
                           "token_secret_ref": {"file": "root.token"}},
    Kind.RESOURCE: {"kind": "ssh", "address": "web1:22"},
}


def text(kind: Kind, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "limen.dev/v1alpha1", "kind": kind.value,
                           "metadata": {"name": name}, "spec": spec})


def errors(source: str) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate(load_text(source, "x.yaml"))
    return [f"{e.path}: {e.reason}" for e in caught.value.errors]


@pytest.mark.parametrize("kind", list(SPECS))
def test_spec_name_names_the_object_in_limen(kind: Kind) -> None:
    spec = {**SPECS[kind], "name": "alice@example.com"}
    [resource] = validate(load_text(text(kind, "alice-example-com", spec), "x.yaml"))
    assert resource.name == "alice@example.com"
    assert resource.spec["name"] == "alice@example.com"  # kept: the stored object re-validates
    [again] = validate(load_text(yaml.safe_dump(resource.to_document()), "y.yaml"))
    assert again == resource


@pytest.mark.parametrize("kind", list(SPECS))
def test_without_spec_name_metadata_name_is_the_name(kind: Kind) -> None:
    [resource] = validate(load_text(text(kind, "dev", SPECS[kind]), "x.yaml"))
    assert resource.name == "dev"


@pytest.mark.parametrize("bad", ["Alice@example.com", "-x", "a b", "x" * 254, ""])
def test_invalid_spec_name_is_rejected_with_its_path(bad: str) -> None:
    found = errors(text(Kind.USER, "alice", {**SPECS[Kind.USER], "name": bad}))
    assert found
    assert all(e.startswith("spec.name: ") for e in found), found


def test_cluster_has_no_spec_name() -> None:
    assert "name" not in spec_schema(Kind.CLUSTER)["properties"]
    found = errors(text(Kind.CLUSTER, "main", {"public_address": "x.example", "name": "y"}))
    assert any(e.startswith("spec.name: ") for e in found), found


def test_duplicates_are_found_by_the_limen_name() -> None:
    source = (text(Kind.ROLE, "dev", {}) + "---\n"
              + text(Kind.ROLE, "developers", {"name": "dev"}))
    found = errors(source)
    assert len(found) == 1
    assert found[0].startswith("metadata.name: duplicate Role/dev: already declared in x.yaml[0]")
