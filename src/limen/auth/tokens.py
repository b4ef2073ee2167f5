"""Join tokens: how agents, proxies and trusted clusters prove they may join.

A token is 32 random bytes (hex); the store keeps only its SHA-256 (and its first
``HINT_LENGTH`` characters, to recognise it in ``lmctl tokens ls``), as a ``Token`` resource
named by the first 32 hex digits of the hash, with the backend expiry set to the token's end.
Tokens of type node/db/kube/app/proxy are reusable until they expire (like Teleport's);
``trusted_cluster`` tokens and ``--single-use`` ones are consumed atomically by their first use.
Called by ``limen.auth.server``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from limen.api.resources import Kind, Resource
from limen.errors import AccessDenied, BadParameter, CompareFailed, NotFound
from limen.services.resources import ResourceStore, resource_key

__all__ = ["HINT_LENGTH", "TOKEN_TYPES", "JoinTokens", "token_id"]

TOKEN_TYPES = ("node", "db", "kube", "app", "proxy", "trusted_cluster")
MAX_TTL = timedelta(days=30)
HINT_LENGTH = 6
"""Characters of the secret a record keeps (``spec.hint``) to be recognised in a listing."""


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class JoinTokens:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def create(
        self, token_type: str, ttl: timedelta, *, now: datetime,
        labels: Mapping[str, str] | None = None, single_use: bool | None = None,
    ) -> tuple[str, Resource]:
        """A new token (the secret, returned once) and its stored record."""
        if token_type not in TOKEN_TYPES:
            raise BadParameter(f"unknown token type {token_type!r} (use {', '.join(TOKEN_TYPES)})")
        if not timedelta(0) < ttl <= MAX_TTL:
            raise BadParameter("token TTL must be between 1s and 30 days")
        secret = secrets.token_hex(32)
        expires = now + ttl
        if single_use is None:
            single_use = token_type == "trusted_cluster"
        spec = {"type": token_type, "sha256": _digest(secret), "hint": secret[:HINT_LENGTH],
                "expires": expires.isoformat(),
                "single_use": single_use, "labels": dict(labels or {})}
        record = Resource(Kind.TOKEN, token_id(secret), spec=spec)
        stored = await self.store.create(record, expires=expires.timestamp())
        return secret, stored

    async def consume(self, secret: str, expected_types: tuple[str, ...], *,
                      now: datetime) -> Resource:
        """Check a presented token; consume it when single-use. ``AccessDenied`` otherwise."""
        if not secret or len(secret) > 256:
            raise AccessDenied("invalid join token")
        record = await self.store.find(Kind.TOKEN, token_id(secret))
        if record is None or not hmac.compare_digest(record.spec["sha256"], _digest(secret)):
            raise AccessDenied("invalid or expired join token")
        if datetime.fromisoformat(record.spec["expires"]) <= now:
            raise AccessDenied("join token has expired")
        if record.spec["type"] not in expected_types:
            raise AccessDenied(
                f"join token is of type {record.spec['type']}, not {' or '.join(expected_types)}"
            )
        if record.spec.get("single_use"):
            try:
                await self.store.backend.delete(
                    resource_key(Kind.TOKEN, record.name),
                    expected_revision=record.revision,
                )
            except (CompareFailed, NotFound):
                raise AccessDenied("join token was already used") from None
        return record

    async def list(self) -> list[Resource]:
        return await self.store.list(Kind.TOKEN)

    @staticmethod
    def expires_at(record: Resource) -> datetime:
        return datetime.fromisoformat(record.spec["expires"]).astimezone(UTC)
