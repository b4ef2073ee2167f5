"""Reads the join token a TrustedCluster references in ``token_secret_ref``, from the configured
places only.

The reference comes from a document (Git, ``lmctl apply``, the auth API, a custom resource),
so it never chooses what auth reads (the rule: ``limen.api.secret_refs``; the loader already
refuses anything else, and this module refuses it again at use time)::

    {file: NAME}            DIR/NAME, DIR the secrets directory (``trust.secrets_dir``, default
                            DATA_DIR/secrets, created 0700): NAME is one plain name; the file
                            is opened relative to DIR with O_NOFOLLOW, must be a regular file,
                            and its resolved path must lie inside DIR (a symlink inside DIR, as
                            in a mounted Kubernetes Secret, may point within DIR, never out)
    {env: LIMEN_SECRET_X}   the auth process's environment, prefixed names only
    {secret, key}           a Kubernetes Secret: not readable here (a clear error)

A reference outside these places raises ``AccessDenied``; a missing or empty secret raises
``BadParameter``. Called by the trusted cluster reconciler (``limen.trust.reconciler``), which
builds the :class:`SecretSource` from the settings (``limen.cli.compose``).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limen.api.secret_refs import check_env_name, check_file_name
from limen.errors import AccessDenied, BadParameter

__all__ = ["SecretSource"]

log = logging.getLogger(__name__)

_MAX_TOKEN_BYTES = 4096
_SHAPES = "token_secret_ref must be {file: NAME}, {env: LIMEN_SECRET_...} or " \
          "{secret: NAME, key: KEY}"


class SecretSource:
    """The configured places a ``token_secret_ref`` may name: ``directory`` and the
    ``LIMEN_SECRET_*`` variables of ``environ`` (default: this process's environment)."""

    def __init__(self, directory: Path, environ: Mapping[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self._environ = os.environ if environ is None else environ

    def ensure_directory(self) -> None:
        """Create the secrets directory (0700) when it is missing; an existing one is left as
        it is (it may be a read-only mount). Never raises: a problem is logged."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            log.warning("cannot create the secrets directory %s: %s", self.directory,
                        err.strerror)

    def resolve(self, ref: Any) -> str:
        """The token ``ref`` names; ``AccessDenied`` for a place outside the configured ones,
        ``BadParameter`` saying what is missing otherwise."""
        if not isinstance(ref, Mapping) or len(ref) != (2 if "secret" in ref else 1):
            raise BadParameter(_SHAPES)
        if "file" in ref:
            return self._read_file(check_file_name(ref["file"]))
        if "env" in ref:
            name = check_env_name(ref["env"])
            value = self._environ.get(name, "").strip()
            if not value:
                raise BadParameter(f"the environment variable {name} holding the token is not "
                                   "set in the auth process")
            return value
        if "secret" in ref and "key" in ref:
            raise BadParameter(f"token_secret_ref names the Kubernetes Secret {ref['secret']!r}: "
                               "auth cannot read Kubernetes Secrets; use {file: NAME} in "
                               f"{self.directory} or {{env: LIMEN_SECRET_...}}")
        raise BadParameter(_SHAPES)

    def _read_file(self, name: str) -> str:
        try:
            base = os.path.realpath(self.directory, strict=True)
        except OSError as err:
            raise BadParameter(f"cannot open the secrets directory {self.directory}: "
                               f"{err.strerror}") from None
        path = os.path.join(base, name)
        try:
            resolved = os.path.realpath(path, strict=True)
        except OSError as err:
            raise BadParameter(f"cannot read the token file {name!r} in {self.directory}: "
                               f"{err.strerror}") from None
        _inside(resolved, base, name)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(resolved, flags)
        except OSError as err:
            raise BadParameter(f"cannot read the token file {name!r} in {self.directory}: "
                               f"{err.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AccessDenied(f"the token file {name!r} in {self.directory} is not a "
                                   "regular file")
            _inside(_opened_path(fd, resolved), base, name)
            data = b""
            while len(data) <= _MAX_TOKEN_BYTES:
                chunk = os.read(fd, _MAX_TOKEN_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) > _MAX_TOKEN_BYTES:
            raise BadParameter(f"the token file {name!r} in {self.directory} is too large to "
                               "hold a token")
        token = data.decode("utf-8", "replace").strip()
        if not token:
            raise BadParameter(f"the token file {name!r} in {self.directory} is empty")
        return token


def _inside(resolved: str, base: str, name: str) -> None:
    """The resolved file must lie under the secrets directory (not be it)."""
    if os.path.commonpath([resolved, base]) != base or resolved == base:
        raise AccessDenied(f"the token file {name!r} resolves outside the secrets directory "
                           f"{base}; auth reads no file there")


def _opened_path(fd: int, fallback: str) -> str:
    """Where the opened descriptor really is (Linux), closing the race between the check of
    the resolved path and the open; ``fallback`` where /proc is not there."""
    try:
        return os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return fallback
