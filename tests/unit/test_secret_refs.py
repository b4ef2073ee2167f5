"""The loader's rule for TrustedCluster secret references (limen.api.secret_refs, enforced by
the CRD schema through limen.api.validation on every path): a file NAME, a LIMEN_SECRET_
variable or a Secret of the resource's namespace; anything else is an error naming the file,
the document, the field and the line. Also the settings' secrets directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from limen.api.loader import SourceDocument, load_text
from limen.api.schemas import spec_schema
from limen.api.secret_refs import (
    ENV_PATTERN,
    FILE_NAME_PATTERN,
    refused_references,
)
from limen.api.validation import validate
from limen.config import load_settings
from limen.errors import BadParameter, ValidationFailed

DOCUMENT = """\
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata:
  name: org-a
spec:
  proxy_address: attacker.example:443
  token_secret_ref: {ref}
"""


def _validate(ref: str) -> list[str]:
    try:
        validate(load_text(DOCUMENT.format(ref=ref), "trusted-clusters/org-a.yaml"))
    except ValidationFailed as failed:
        return [str(e) for e in failed.errors]
    return []


@pytest.mark.parametrize(("ref", "field", "shown"), [
    ("{file: /var/lib/limen/admin/key.pem}", "file", "'/var/lib/limen/admin/key.pem'"),
    ("{file: ../admin/key.pem}", "file", "'../admin/key.pem'"),
    ("{file: ..}", "file", "'..'"),
    ("{file: secrets/../../admin/key.pem}", "file", "'secrets/../../admin/key.pem'"),
    ("{file: .hidden}", "file", "'.hidden'"),
    ("{env: HOME}", "env", "'HOME'"),
    ("{env: LIMEN_TOKEN}", "env", "'LIMEN_TOKEN'"),
    ("{env: LIMEN_SECRET_}", "env", "'LIMEN_SECRET_'"),
    ("{secret: ../kube-system/x, key: token}", "secret", "'../kube-system/x'"),
    ("{secret: s, key: a/b}", "key", "'a/b'"),
])
def test_references_outside_the_configured_places_are_load_errors(ref: str, field: str,
                                                                   shown: str) -> None:
    errors = _validate(ref)
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"trusted-clusters/org-a.yaml[0] spec.token_secret_ref.{field}: {shown} is not valid "
        "here: ")
    assert errors[0].endswith("(line 7)")


def test_the_errors_say_where_secrets_may_be() -> None:
    (file_error,) = _validate("{file: /etc/shadow}")
    assert "secrets directory (trust.secrets_dir in limen.yaml, default DATA_DIR/secrets)" \
        in file_error
    (env_error,) = _validate("{env: AWS_SECRET_ACCESS_KEY}")
    assert "starting with LIMEN_SECRET_" in env_error


def test_a_namespace_cannot_be_named() -> None:
    assert _validate("{secret: s, key: k, namespace: kube-system}") == [
        "trusted-clusters/org-a.yaml[0] spec.token_secret_ref.namespace: unknown field (line 7)"]


@pytest.mark.parametrize("ref", [
    "{file: org-a.token}", "{file: root_token.txt}", "{env: LIMEN_SECRET_ORG_A}",
    "{secret: org-a-token, key: token}",
])
def test_references_inside_the_configured_places_load(ref: str) -> None:
    assert _validate(ref) == []


def test_the_crd_carries_the_same_patterns_as_the_use_time_check() -> None:
    spec = spec_schema("TrustedCluster")["properties"]["spec"]
    ref = spec["properties"]["token_secret_ref"]["properties"]
    assert ref["file"]["pattern"] == FILE_NAME_PATTERN
    assert ref["env"]["pattern"] == ENV_PATTERN


def test_refused_references_picks_the_reference_errors_only() -> None:
    data = yaml.safe_load(DOCUMENT.format(ref="{env: HOME}"))
    data["spec"]["ca_pin"] = "nope"
    with pytest.raises(ValidationFailed) as caught:
        validate([SourceDocument("api", 0, 1, data)])
    assert len(caught.value.errors) == 2
    assert [e.path for e in refused_references(caught.value)] == ["spec.token_secret_ref.env"]


def test_the_secrets_directory_defaults_under_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(env={}, overrides={"data_dir": str(tmp_path / "d")})
    assert settings.secrets_dir == tmp_path / "d" / "secrets"
    config = tmp_path / "limen.yaml"
    config.write_text(yaml.safe_dump({"trust": {"secrets_dir": "/etc/limen/secrets"}}))
    assert load_settings(config, env={}).secrets_dir == Path("/etc/limen/secrets")


@pytest.mark.parametrize("trust", [{"secrets_dir": ""}, {"secret_dir": "/x"}, "x"])
def test_a_bad_trust_setting_is_refused(tmp_path: Path, trust: Any) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text(yaml.safe_dump({"trust": trust}))
    with pytest.raises(BadParameter, match="config trust"):
        load_settings(config, env={})
