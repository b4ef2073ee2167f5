"""Attack: secrets committed to the access repository pass validation because only field
NAMES were checked.

A ``ghp_`` token and an AWS secret key as trait values, and annotations or labels named
``token``, were accepted (and stored, and shown by ``lmctl get``). Every string value and key
of a document is now scanned for well-known secret formats; the refusal names the file and
field and shows a masked form, never the value. Fake secrets are built at run time so this
file holds none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from limen.api.loader import SourceDocument, load_path
from limen.api.secret_scan import entropy, find_secrets, mask
from limen.api.validation import validate
from limen.errors import ValidationFailed

ROOT = Path(__file__).resolve().parents[2]
GHP = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0" + "P9o8N7m6L5k4J3i2"
PAT = "github_pat_" + "11ABCDEFG0" + "abcdefghijklmnop_QRSTUVWXYZ0123456789abcdefghij"
AKIA = "AKIA" + "Q3EXAMPLEZ7K2M4P"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
AWS_SECRET_PLAIN = "wJalrXUtnFEMI4K7MDENG1" + "bPxRfiCYEXAMPLEKEY"  # no '/' or '+'
SLACK = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyD3xAmPlE_kEy-0123456789abcdefghij"
JWT = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJhbGljZSIsImFkbWluIjp0cnVlfQ." + "c2lnbmF0dXJlX2hlcmU"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
RANDOM = "q8Zr4Kx1Vn7Tb2Wm9Ps3"


def user(traits: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "User",
            "metadata": {"name": "alice", **metadata},
            "spec": {"roles": ["dev"], "traits": traits or {"logins": ["alice"]}}}


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate([SourceDocument("users/alice.yaml", 0, 1, data)])
    return [str(e) for e in caught.value.errors]


CASES = [
    ("github token in a trait", user({"team": [GHP]}), "spec.traits.team[0]",
     "a GitHub token (ghp_…, 40 characters)", GHP),
    ("fine-grained github token", user({"team": [PAT]}), "spec.traits.team[0]",
     "a GitHub token (github_pat_…", PAT),
    ("aws key id in a trait", user({"team": [AKIA]}), "spec.traits.team[0]",
     "an AWS access key id (AKIA…, 20 characters)", AKIA),
    ("aws secret key under an aws trait", user({"aws": [AWS_SECRET_PLAIN]}), "spec.traits.aws[0]",
     "an AWS secret access key (…, 40 characters)", AWS_SECRET_PLAIN),
    ("aws secret key in any trait", user({"team": [AWS_SECRET]}), "spec.traits.team[0]",
     "an AWS secret access key", AWS_SECRET),
    ("slack token", user({"team": [SLACK]}), "spec.traits.team[0]", "a Slack token (xoxb-…",
     SLACK),
    ("google api key", user({"team": [GOOGLE]}), "spec.traits.team[0]",
     "a Google API key (AIza…, 39 characters)", GOOGLE),
    ("jwt", user({"team": [JWT]}), "spec.traits.team[0]", "a JSON Web Token (eyJ…", JWT),
    ("pem private key", user({"team": [PEM]}), "spec.traits.team[0]", "looks like a secret",
     "MIIEow"),
    ("annotation named token", user(annotations={"token": RANDOM}),
     "metadata.annotations.token", "under the name 'token'", RANDOM),
    ("label named token", user(labels={"token": RANDOM}), "metadata.labels.token",
     "under the name 'token'", RANDOM),
    ("annotation named password", user(annotations={"example.com/password": RANDOM}),
     'metadata.annotations["example.com/password"]', "under the name", RANDOM),
    ("token in an annotation of any name", user(annotations={"note": f"use {GHP} here"}),
     "metadata.annotations.note", "a GitHub token", GHP),
    ("jwt in a label (too long for a label value too)", user(labels={"team": JWT}),
     "metadata.labels.team", "a JSON Web Token", JWT),
    ("token as a map key", user({GHP: ["x"]}), "spec.traits:",
     "a key looks like a GitHub token", GHP),
]


@pytest.mark.parametrize(("name", "data", "path", "reason", "secret"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_secret_anywhere_is_refused_by_path_and_never_echoed(
        name: str, data: dict[str, Any], path: str, reason: str, secret: str) -> None:
    found = errors(data)
    assert len(found) == 1, found
    assert found[0].startswith(f"users/alice.yaml[0] {path[:30]}"), found
    assert reason in found[0], found
    assert "reference it with" in found[0]
    assert secret not in found[0], found
    assert secret[4:24] not in found[0], found


def test_every_secret_of_a_document_is_listed() -> None:
    data = user({"a": [GHP], "b": [SLACK]}, annotations={"token": RANDOM})
    found = errors(data)
    assert len(found) == 3, found


NOT_SECRETS: list[dict[str, Any]] = [
    user({"team": ["platform"], "logins": ["alice", "root"]}),
    user({"pin": ["sha256:" + "0f" * 32]}),
    user({"ssh": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9"
                  "GKJl alice@laptop"]}),
    user({"commit": ["3f2a9c01d4e7b5a6c8d9e0f1a2b3c4d5e6f7a8b9"]}),
    user({"uuid": ["5c7a3b0e-8d2f-4c1a-9e6b-2f4d8a1c3e5b"]}),
    user({"path": ["/var/lib/limen/secrets/Org-A/token-2024.txt"]}),
    user(labels={"secret": "true", "token-kind": "static"},
         annotations={"limen.dev/token-ttl": "1h", "password-policy": "strong-and-long",
                      "description": "The token is stored in Vault under secret/limen"}),
]


@pytest.mark.parametrize("data", NOT_SECRETS)
def test_ordinary_values_are_not_secrets(data: dict[str, Any]) -> None:
    validate([SourceDocument("users/alice.yaml", 0, 1, data)])


def test_the_repository_examples_hold_no_secret() -> None:
    documents = load_path(ROOT / "examples" / "gitops")
    assert documents
    assert [f for d in documents for f in find_secrets(d.data)] == []


def test_crd_samples_and_golden_files_hold_no_secret() -> None:
    for folder in ("crds", "tests/golden"):
        for file in sorted((ROOT / folder).rglob("*.yaml")):
            for data in yaml.safe_load_all(file.read_text()):
                if isinstance(data, dict) and data.get("apiVersion") == "limen.dev/v1alpha1":
                    assert find_secrets(data) == [], file


def test_mask_shows_the_public_prefix_and_the_length_only() -> None:
    assert mask(GHP, 4) == "ghp_…, 40 characters"
    assert mask("short", 4) == "…, 5 characters"
    assert mask(RANDOM) == "…, 20 characters"
    assert entropy("aaaa") == 0.0
    assert entropy(RANDOM) > 4.0
