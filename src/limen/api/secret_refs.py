"""Where a declared document may point auth for a secret: the rule of ``*_secret_ref`` objects.

A TrustedCluster's ``token_secret_ref`` comes from Git, ``lmctl apply``, the auth API or a
custom resource, so its author must not choose what auth reads. It may only name a secret in a
place configured for that purpose::

    {file: NAME}          a file NAME inside the secrets directory of the process that uses it
                          (``trust.secrets_dir`` in limen.yaml, default DATA_DIR/secrets): one
                          name, never a path (no '/', not starting with '.': no '..')
    {env: LIMEN_SECRET_X} an environment variable whose name carries the fixed prefix
    {secret: S, key: K}   a Kubernetes Secret in the custom resource's own namespace (the
                          reference has no namespace field)

The patterns below are the same as those of the CRD (``crds/limen.dev_trustedclusters.yaml``),
which ``limen.api.validation`` checks on every path (Git, lmctl, the auth API, the operator) and
the Kubernetes API server checks at admission; ``check_file_name`` and ``check_env_name`` are
the use-time check of ``limen.trust.secrets``; ``refused_references`` picks the loader's
errors about them so that the auth API audits them (``access.denied``). Pure; no I/O.
"""

from __future__ import annotations

import re

from limen.errors import AccessDenied, DocumentError, ValidationFailed

__all__ = [
    "ENV_PATTERN",
    "ENV_PREFIX",
    "FILE_NAME_PATTERN",
    "REFERENCE_FIELDS",
    "check_env_name",
    "check_file_name",
    "refused_references",
]

ENV_PREFIX = "LIMEN_SECRET_"
"""Only environment variables whose name starts with this may be referenced."""
FILE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$"
"""A file name inside the secrets directory: no '/', no leading '.' (so never '.' or '..')."""
ENV_PATTERN = r"^LIMEN_SECRET_[A-Za-z0-9_]{1,200}$"
"""An environment variable name with the fixed prefix and something after it."""

REFERENCE_FIELDS = ("token_secret_ref", "client_secret_ref")
"""The reference fields whose target auth reads (a field path containing one is a refusal of
a place, audited by the auth API)."""

_FILE_NAME = re.compile(FILE_NAME_PATTERN)
_ENV = re.compile(ENV_PATTERN)


def check_file_name(name: object) -> str:
    """``name`` when it is a plain file name; ``AccessDenied`` saying why not otherwise."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise AccessDenied(f"token_secret_ref.file {name!r} is not a file name inside the "
                           "secrets directory (no '/', no leading '.'); auth reads no other "
                           "file")
    return name


def check_env_name(name: object) -> str:
    """``name`` when it carries the prefix; ``AccessDenied`` saying why not otherwise."""
    if not isinstance(name, str) or not _ENV.fullmatch(name):
        raise AccessDenied(f"token_secret_ref.env {name!r} does not start with {ENV_PREFIX} "
                           "(followed by letters, digits or '_'); auth reads no other variable")
    return name


def refused_references(failed: ValidationFailed) -> list[DocumentError]:
    """The errors of ``failed`` about a secret reference (``spec.token_secret_ref...``)."""
    return [e for e in failed.errors
            if any(f".{field}" in f".{e.path}" for field in REFERENCE_FIELDS)]
