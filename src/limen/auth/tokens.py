"""Join tokens: how agents, proxies and trusted clusters prove they may join.

A token is 32 random bytes (hex); the store keeps only its SHA-256 (and its first
``HINT_LENGTH`` characters, to recognise it in ``lmctl tokens ls``), as a ``Token`` resource
named by the first 32 hex digits of the hash, with the backend expiry set to the token's end.
Every token is single use by default (like Teleport's): its first successful use deletes it
in the same backend transaction that registers what joined (``limen.auth.core.join`` builds
it from :meth:`JoinTokens.check` and :func:`use_ops`), so two joins racing with one token give
one success. ``lmctl tokens add --reusable`` makes one that joins until it expires
(``spec.single_use: false``; a record without the field counts as single use). The static
proxy token (``auth.proxy_token_file``) is no record here and is reusable by design.
Called by ``limen.auth.core`` and ``limen.auth.trusted_clusters.root_handshake``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from limen.api.resources import Kind, Resource
from limen.backend.base import Condition, Delete
from limen.errors import AccessDenied, BadParameter, CompareFailed, NotFound
from limen.services.resource_store import ResourceStore, resource_key

__all__ = ["HINT_LENGTH", "TOKEN_TYPES", "JoinTokens", "is_single_use", "token_id", "use_ops"]

TOKEN_TYPES = ("node", "db", "kube", "app", "proxy", "trusted_cluster")
MAX_TTL = timedelta(days=30)
HINT_LENGTH = 6
"""Characters of the secret a record keeps (``spec.hint``) to be recognised in a listing."""


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_single_use(record: Resource) -> bool:
    """Only an explicit ``single_use: false`` makes a token reusable."""
    return record.spec.get("single_use") is not False


def use_ops(record: Resource) -> tuple[list[Condition], list[Delete]]:
    """What using ``record`` takes in a backend transaction: it must still be the record
    checked (not used or removed meanwhile) and, when single use, it is deleted."""
    key = resource_key(Kind.TOKEN, record.name)
    return ([Condition(key, record.revision)],
            [Delete(key)] if is_single_use(record) else [])


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
            single_use = True
        if not isinstance(single_use, bool):
            raise BadParameter("single_use must be true or false")
        if token_type == "trusted_cluster" and not single_use:
            raise BadParameter("trusted_cluster tokens are single use")
        spec = {"type": token_type, "sha256": _digest(secret), "hint": secret[:HINT_LENGTH],
                "expires": expires.isoformat(),
                "single_use": single_use, "labels": dict(labels or {})}
        record = Resource(Kind.TOKEN, token_id(secret), spec=spec)
        stored = await self.store.create(record, expires=expires.timestamp())
        return secret, stored

    async def check(self, secret: str, expected_types: tuple[str, ...], *,
                    now: datetime) -> Resource:
        """The record of a valid presented token of one of ``expected_types``, not used yet
        (use it with :func:`use_ops`); ``AccessDenied`` otherwise."""
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
        return record

    async def consume(self, secret: str, expected_types: tuple[str, ...], *,
                      now: datetime) -> Resource:
        """:meth:`check`, then use the token on its own (deleted when single use)."""
        record = await self.check(secret, expected_types, now=now)
        if is_single_use(record):
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
