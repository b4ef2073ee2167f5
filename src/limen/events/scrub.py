"""The secret scrubber: secrets never land in audit events.

Called by :func:`limen.events.make_event` on every event's free fields, before anything is
written or handed to a subscriber. Two rules, applied recursively (nested mappings and lists):

* a field whose *name* looks like a secret is removed: ``password``, ``passwd``,
  ``passphrase``, ``otp``/``totp``/``hotp``, ``secret``, ``token``, ``private_key``,
  ``api_key``, ``credential``, ``authorization``, ``cookie`` — matched case-insensitively as
  a word or inside a compound name (``newPassword``, ``refresh_token``, ``tls_private_key``).
  Exception: names that describe a token or secret without being it — ending in ``id``,
  ``name``, ``hash``, ``type``, ``kind``, ``ttl``, ``expires``/``expiry`` or ``ref``
  (``token_id``, ``token_name``, ``token_hash``, ``token_secret_ref``). Such a field must hold
  an identifier derived from the token (``limen.auth.tokens.token_id``) or
  ``token_fingerprint(t)``, never the token itself.
  Password and OTP names have no exception (a password hash is a secret too).
* a string *value* that contains a PEM private key (``-----BEGIN ... PRIVATE KEY-----``) is
  replaced by ``"[REDACTED]"``, whatever its field is called (a query, a command line).

The caller receives the cleaned fields plus the paths that were scrubbed (names, never values),
which :func:`~limen.events.make_event` records in the event's ``scrubbed`` field so an auditor
sees that something was withheld.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_name", "looks_like_private_key", "scrub", "token_fingerprint"]

REDACTED = "[REDACTED]"

_PEM_PRIVATE = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# Substrings of the compacted name (lowercase, separators removed) that mark a secret.
_ALWAYS_SECRET = ("password", "passwd", "passphrase", "privatekey", "privkey", "apikey",
                  "credential", "authorization", "cookie", "totp", "hotp")
# Secret unless the name ends with a word from _DESCRIPTIVE (token_name, secret_ref, ...).
_SECRET_UNLESS_DESCRIPTIVE = ("token", "secret")
_DESCRIPTIVE = frozenset({"id", "name", "hash", "type", "kind", "ttl", "expires", "expiry", "ref"})


def _words(name: str) -> list[str]:
    return [w for w in _NON_ALNUM.split(_CAMEL.sub(r"\1_\2", name).lower()) if w]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` must never be written to the audit log (cached: the
    same few field names come with every event, and the answer depends on the name only)."""
    words = _words(name)
    compact = "".join(words)
    if any(part in compact for part in _ALWAYS_SECRET):
        return True
    if any(w == "otp" or w.startswith("otp") for w in words):
        return True
    if any(part in compact for part in _SECRET_UNLESS_DESCRIPTIVE):
        return not (len(words) > 1 and words[-1] in _DESCRIPTIVE)
    return False


def looks_like_private_key(value: str) -> bool:
    """Whether ``value`` contains a PEM (or OpenSSH PEM-armoured) private key."""
    return _PEM_PRIVATE.search(value) is not None


def token_fingerprint(token: str) -> str:
    """A short, non-reversible id for a token, safe to log as ``token_hash``."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def scrub(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return ``(clean_fields, scrubbed_paths)``; ``fields`` itself is not modified.

    ``fields`` must be plain JSON data (mappings with string keys, lists, scalars).
    Paths look like ``password``, ``spec.auth.token``, ``queries[2]``.
    """
    scrubbed: list[str] = []
    clean = _scrub_mapping(fields, "", scrubbed)
    return clean, scrubbed


def _scrub_mapping(fields: Mapping[str, Any], prefix: str, scrubbed: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if is_secret_name(str(key)):
            scrubbed.append(path)
            continue
        out[key] = _scrub_value(value, path, scrubbed)
    return out


def _scrub_value(value: Any, path: str, scrubbed: list[str]) -> Any:
    if isinstance(value, str):
        if looks_like_private_key(value):
            scrubbed.append(path)
            return REDACTED
        return value
    if isinstance(value, Mapping):
        return _scrub_mapping(value, path, scrubbed)
    if isinstance(value, list):
        return [_scrub_value(item, f"{path}[{i}]", scrubbed) for i, item in enumerate(value)]
    return value
