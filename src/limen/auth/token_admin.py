"""Join tokens for administrators: ``lmctl tokens ls`` and ``lmctl tokens rm``.

The store keeps a token's SHA-256 only (``limen.auth.tokens``), named by its first 32 hex
digits (the token id), and for tokens made since it was introduced the secret's first
:data:`HINT_LENGTH` characters (``spec.hint``) so a listing can show ``3f9a1c…`` beside the
id. ``rm`` takes the whole token, its id, or an unambiguous prefix of either. Called by
``limen.auth.http.admin`` and by ``limen.cli.admin_local`` (offline ``lmctl``).
"""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.auth.tokens import HINT_LENGTH, is_single_use, token_id
from limen.errors import BadParameter, NotFound

__all__ = ["HINT_LENGTH", "MIN_PREFIX", "find_token", "list_tokens", "remove_token", "token_row"]

MIN_PREFIX = 6
"""Shortest prefix ``lmctl tokens rm`` accepts."""


def token_row(record: Resource) -> dict[str, Any]:
    """One line of ``lmctl tokens ls``; never the secret (it is not stored)."""
    spec = record.spec
    hint = spec.get("hint")
    return {
        "id": record.name, "hint": hint if isinstance(hint, str) else None,
        "type": str(spec.get("type", "")), "expires": str(spec.get("expires", "")),
        "single_use": is_single_use(record), "labels": dict(spec.get("labels") or {}),
    }


async def list_tokens(auth: AuthServer) -> list[dict[str, Any]]:
    records = await auth.tokens.list()
    return sorted((token_row(r) for r in records), key=lambda row: row["expires"])


async def find_token(auth: AuthServer, ref: str) -> Resource:
    """The token record ``ref`` names: the token itself, its id, or a unique prefix."""
    ref = ref.strip().rstrip("…*")
    if not ref:
        raise BadParameter("name a token: the token, its id, or a prefix of either")
    records = await auth.tokens.list()
    exact = [r for r in records if r.name in (ref, token_id(ref))]
    if exact:
        return exact[0]
    if len(ref) < MIN_PREFIX:
        raise BadParameter(f"{ref!r} is too short to name a token: give at least "
                           f"{MIN_PREFIX} characters of the token or of its id")
    matches = [r for r in records if r.name.startswith(ref) or ref == r.spec.get("hint")]
    if len(matches) > 1:
        ids = ", ".join(sorted(r.name for r in matches))
        raise BadParameter(f"{ref!r} names {len(matches)} tokens (ids {ids}); give more of it")
    if not matches:
        raise NotFound(f"token {ref!r} not found (it may have expired or been used); "
                       "`lmctl tokens ls` lists the tokens")
    return matches[0]


async def remove_token(auth: AuthServer, ref: str, *, actor: str) -> dict[str, Any]:
    record = await find_token(auth, ref)
    await auth.store.delete(Kind.TOKEN, record.name)
    await auth.emit("join_token.delete", user=actor, token_id=record.name,
                    token_type=str(record.spec.get("type", "")))
    return token_row(record)
