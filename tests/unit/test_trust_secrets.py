"""token_secret_ref resolution (limen.trust.secrets): file, env, Kubernetes Secret refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from limen.errors import BadParameter
from limen.trust.secrets import resolve_token


def test_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("  abc123\n")
    assert resolve_token({"file": str(path)}) == "abc123"


def test_env_is_read() -> None:
    assert resolve_token({"env": "TOK"}, {"TOK": "xyz"}) == "xyz"


@pytest.mark.parametrize(("ref", "environ", "message"), [
    ({"file": "/nonexistent/limen.token"}, {}, "cannot read the token file"),
    ({"env": "TOK"}, {}, "TOK holding the token is not set"),
    ({"secret": "s", "key": "k"}, {}, "only the Kubernetes operator resolves Secrets"),
    ("a-token", {}, "token_secret_ref must be"),
    ({}, {}, "token_secret_ref must be"),
])
def test_unusable_references(ref: Any, environ: dict[str, str], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        resolve_token(ref, environ)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("\n")
    with pytest.raises(BadParameter, match="is empty"):
        resolve_token({"file": str(path)})
