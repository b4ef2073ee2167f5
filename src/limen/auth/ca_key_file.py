"""``backend.ca_key_file``: the key that encrypts the CAs' private keys in the backend.

The file holds 32 random bytes written as base64 or hex (white space around them ignored),
is the same on every auth replica, and must be readable by its owner only (mode 0600 or
0400)::

    head -c 32 /dev/urandom | base64 > ca.key && chmod 600 ca.key

One exception, for Kubernetes: a Secret volume with ``fsGroup`` gives its files to root with
the pod's group, read-only (0440), a mode the process can neither change nor avoid. Such a
file is accepted when it belongs to another user, its group is the process's own gid, and it
grants nothing more (no group write, no bit for others).

With ``backend.type: postgres`` it is required: auth refuses to start without it, rather than
keep CA private keys in a database other people back up and replicate. With SQLite (the 0700
data directory) it is optional; when set, the records are encrypted there too. The key itself
is never logged nor put in a message. Called by ``limen.cli.compose`` (auth's start), the
offline ``lmctl --data-dir`` and ``lmctl backend migrate``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path

from limen.auth.ca_sealing import CA_KEY_BYTES, CASealer
from limen.config import BackendSettings
from limen.errors import BadParameter

__all__ = ["ca_sealer_for", "read_ca_key", "sealer_from_file"]

_MAX_FILE_BYTES = 4096
_HEX = re.compile(r"[0-9a-fA-F]+")
HOW_TO = ("make one with: head -c 32 /dev/urandom | base64 > ca.key && chmod 600 ca.key, "
          "and give every auth replica the same file")


def read_ca_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte key in ``path``; ``BadParameter`` when the file is missing, readable or
    writable by its group or others (but see the module doc: a Secret volume's 0440), or does
    not hold exactly 32 bytes in base64 or hex."""
    where = Path(path)
    try:
        with where.open("rb") as handle:
            info = os.fstat(handle.fileno())
            mode = info.st_mode
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as err:
        raise BadParameter(f"cannot read backend.ca_key_file {where}: "
                           f"{err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise BadParameter(f"backend.ca_key_file {where} is not a regular file")
    if mode & 0o077 and not _given_through_own_group(info):
        raise BadParameter(
            f"backend.ca_key_file {where} is open to its group or others (mode "
            f"{stat.S_IMODE(mode):04o}); it encrypts the CA private keys: chmod 600 it")
    if len(data) > _MAX_FILE_BYTES:
        raise BadParameter(f"backend.ca_key_file {where} is too large to hold a key")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadParameter(f"backend.ca_key_file {where} must hold the key as base64 or hex "
                           f"text; {HOW_TO}") from None
    key = _decode(text)
    if key is None:
        raise BadParameter(f"backend.ca_key_file {where} holds neither base64 nor hex; "
                           f"{HOW_TO}")
    if len(key) < CA_KEY_BYTES:
        raise BadParameter(f"backend.ca_key_file {where} holds a {len(key)}-byte key, too "
                           f"short: it needs {CA_KEY_BYTES} bytes (AES-256); {HOW_TO}")
    if len(key) > CA_KEY_BYTES:
        raise BadParameter(f"backend.ca_key_file {where} holds {len(key)} bytes; the key is "
                           f"exactly {CA_KEY_BYTES} bytes (AES-256); {HOW_TO}")
    return key


def _given_through_own_group(info: os.stat_result) -> bool:
    """Is this file another user's, readable by the process's own group and nobody else
    (what a Kubernetes Secret volume with ``fsGroup`` makes: root, the pod's group, 0440)?"""
    return (stat.S_IMODE(info.st_mode) & 0o077 == 0o040 and info.st_gid == os.getgid()
            and info.st_uid != os.getuid())


def _decode(text: str) -> bytes | None:
    if not text:
        return b""
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        return bytes.fromhex(text)
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def sealer_from_file(path: str | os.PathLike[str]) -> CASealer:
    """A :class:`CASealer` with the key in ``path``."""
    return CASealer(read_ca_key(path), source=f"backend.ca_key_file {path}")


def ca_sealer_for(settings: BackendSettings) -> CASealer | None:
    """The sealer of the configured backend: required (``BadParameter`` without it) for
    ``postgres``; for ``sqlite`` only when ``ca_key_file`` is set (else None: plain records)."""
    if settings.ca_key_file:
        return sealer_from_file(settings.ca_key_file)
    if settings.type == "postgres":
        raise BadParameter(
            "backend.type postgres needs backend.ca_key_file: a file (mode 0600) holding a "
            "32-byte key, base64 or hex, that encrypts the CA private keys in the database; "
            + HOW_TO)
    return None
