"""token_secret_ref resolution (limen.trust.secrets.SecretSource): a file NAME inside the
secrets directory, a LIMEN_SECRET_ variable; everything else refused (AccessDenied) at use
time, whatever the loader let through; missing or empty secrets are BadParameter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from limen.api.secret_refs import check_env_name, check_file_name
from limen.errors import AccessDenied, BadParameter
from limen.trust.secrets import SecretSource


@pytest.fixture
def secrets(tmp_path: Path) -> SecretSource:
    directory = tmp_path / "data" / "secrets"
    directory.mkdir(parents=True, mode=0o700)
    return SecretSource(directory, {"LIMEN_SECRET_ROOT": " xyz\n", "HOME": "/root",
                                    "LIMEN_TOKEN": "join-token"})


def test_file_is_read_and_stripped(secrets: SecretSource) -> None:
    (secrets.directory / "root.token").write_text("  abc123\n")
    assert secrets.resolve({"file": "root.token"}) == "abc123"


def test_prefixed_env_is_read(secrets: SecretSource) -> None:
    assert secrets.resolve({"env": "LIMEN_SECRET_ROOT"}) == "xyz"


@pytest.mark.parametrize("name", [
    "/etc/passwd", "../admin/key.pem", "..", ".", "admin/key.pem", ".hidden", "a/../b", "",
    "x\x00y", 7, None,
])
def test_file_refs_that_are_not_plain_names_are_refused(secrets: SecretSource,
                                                        name: Any) -> None:
    with pytest.raises(AccessDenied, match="not a file name inside the secrets directory"):
        secrets.resolve({"file": name})


@pytest.mark.parametrize("name", ["HOME", "LIMEN_TOKEN", "LIMEN_SECRET_", "limen_secret_x",
                                  "LIMEN_SECRETS_DIR", "LIMEN_SECRET_A-B", 3])
def test_env_refs_without_the_prefix_are_refused(secrets: SecretSource, name: Any) -> None:
    with pytest.raises(AccessDenied, match="does not start with LIMEN_SECRET_"):
        secrets.resolve({"env": name})


def test_a_symlink_out_of_the_directory_is_refused(secrets: SecretSource,
                                                   tmp_path: Path) -> None:
    admin = tmp_path / "data" / "admin"
    admin.mkdir()
    (admin / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    (secrets.directory / "root.token").symlink_to(admin / "key.pem")
    with pytest.raises(AccessDenied, match="resolves outside the secrets directory"):
        secrets.resolve({"file": "root.token"})
    (secrets.directory / "rel.token").symlink_to("../admin/key.pem")
    with pytest.raises(AccessDenied, match="resolves outside the secrets directory"):
        secrets.resolve({"file": "rel.token"})


def test_a_symlink_to_the_directory_itself_is_refused(secrets: SecretSource) -> None:
    (secrets.directory / "self").symlink_to(".")
    with pytest.raises(AccessDenied, match="resolves outside the secrets directory"):
        secrets.resolve({"file": "self"})


def test_a_symlink_inside_the_directory_is_followed(secrets: SecretSource) -> None:
    """A mounted Kubernetes Secret: ``token -> ..data/token``, ``..data -> ..2024_x``."""
    version = secrets.directory / "..2024_01_01"
    version.mkdir()
    (version / "token").write_text("from-a-secret-volume\n")
    (secrets.directory / "..data").symlink_to(version.name)
    (secrets.directory / "token").symlink_to("..data/token")
    assert secrets.resolve({"file": "token"}) == "from-a-secret-volume"


def test_a_directory_or_fifo_is_not_a_token_file(secrets: SecretSource) -> None:
    (secrets.directory / "sub").mkdir()
    with pytest.raises((AccessDenied, BadParameter)):
        secrets.resolve({"file": "sub"})
    os.mkfifo(secrets.directory / "pipe")
    with pytest.raises(AccessDenied, match="not a regular file"):
        secrets.resolve({"file": "pipe"})  # and it does not hang waiting for a writer


@pytest.mark.parametrize(("ref", "message"), [
    ({"file": "missing.token"}, "cannot read the token file 'missing.token'"),
    ({"env": "LIMEN_SECRET_UNSET"}, "LIMEN_SECRET_UNSET holding the token is not set"),
    ({"secret": "s", "key": "k"}, "auth cannot read Kubernetes Secrets"),
    ("a-token", "token_secret_ref must be"),
    ({}, "token_secret_ref must be"),
    ({"file": "a", "env": "LIMEN_SECRET_ROOT"}, "token_secret_ref must be"),
])
def test_unusable_references(secrets: SecretSource, ref: Any, message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        secrets.resolve(ref)


def test_empty_and_oversized_files_are_refused(secrets: SecretSource) -> None:
    (secrets.directory / "empty").write_text("\n")
    with pytest.raises(BadParameter, match="is empty"):
        secrets.resolve({"file": "empty"})
    (secrets.directory / "big").write_bytes(b"x" * 5000)
    with pytest.raises(BadParameter, match="too large"):
        secrets.resolve({"file": "big"})


def test_a_missing_directory_is_a_clear_error_then_created_private(tmp_path: Path) -> None:
    source = SecretSource(tmp_path / "data" / "secrets", {})
    with pytest.raises(BadParameter, match="cannot open the secrets directory"):
        source.resolve({"file": "root.token"})
    source.ensure_directory()
    assert source.directory.stat().st_mode & 0o777 == 0o700


def test_the_rule_functions_return_what_they_accept() -> None:
    assert check_file_name("org-a.token") == "org-a.token"
    assert check_env_name("LIMEN_SECRET_ORG_A") == "LIMEN_SECRET_ORG_A"
