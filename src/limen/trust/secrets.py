"""Reads the join token a TrustedCluster references in ``token_secret_ref``.

``{file: PATH}`` (stripped of surrounding whitespace) or ``{env: VAR}``; ``{secret, key}``
names a Kubernetes Secret, which only the operator can read: here it is a clear error. Called
by the trusted cluster reconciler (``limen.trust.reconciler``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limen.errors import BadParameter

__all__ = ["resolve_token"]

_MAX_TOKEN_BYTES = 4096


def resolve_token(ref: Any, environ: Mapping[str, str] | None = None) -> str:
    """The token ``ref`` points to; ``BadParameter`` saying what is missing otherwise."""
    if not isinstance(ref, Mapping):
        raise BadParameter("token_secret_ref must be {file: PATH}, {env: VAR} or "
                           "{secret: NAME, key: KEY}")
    if "file" in ref:
        path = Path(str(ref["file"]))
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_TOKEN_BYTES + 1)
        except OSError as err:
            raise BadParameter(f"cannot read the token file {path}: {err.strerror}") from None
        if len(data) > _MAX_TOKEN_BYTES:
            raise BadParameter(f"the token file {path} is too large to hold a token")
        token = data.decode("utf-8", "replace").strip()
        if not token:
            raise BadParameter(f"the token file {path} is empty")
        return token
    if "env" in ref:
        env = os.environ if environ is None else environ
        value = env.get(str(ref["env"]), "").strip()
        if not value:
            raise BadParameter(f"the environment variable {ref['env']} holding the token is "
                               "not set in the auth process")
        return value
    if "secret" in ref:
        raise BadParameter(f"token_secret_ref names the Kubernetes Secret {ref['secret']!r}: "
                           "only the Kubernetes operator resolves Secrets; outside Kubernetes "
                           "use {file: PATH} or {env: VAR}")
    raise BadParameter("token_secret_ref must be {file: PATH}, {env: VAR} or "
                       "{secret: NAME, key: KEY}")
