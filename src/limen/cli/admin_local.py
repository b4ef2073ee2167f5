"""``lmctl --data-dir DIR`` when no cluster runs from DIR: an in-process ``AuthServer`` over
DIR's store, with the same validation, ownership rules and audit events as the auth API.
``open_admin`` has checked that DIR holds a cluster's store, except for a bootstrapping
``lmctl apply`` (which creates it).

Implements ``limen.cli.admin_protocol.AdminApi``. Imported lazily by
``limen.cli.admin_api.open_admin`` (it loads the whole auth server).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, parse_kind
from limen.api.validation import validate
from limen.auth import node_admin, presence, token_admin, user_admin
from limen.auth.audit_signer import audit_signer_source
from limen.auth.ca_key_file import ca_sealer_for
from limen.auth.core import AuthServer
from limen.auth.rotation_service import rotate_ca
from limen.auth.store_keys import (
    APP_PRESENCE_PREFIX,
    DB_PRESENCE_PREFIX,
    GITOPS_STATUS_KEY,
    KUBE_PRESENCE_PREFIX,
)
from limen.backend.factory import open_backend
from limen.ca.authority import CertAuthorityType
from limen.cli.admin_protocol import online_kind
from limen.config import load_settings
from limen.errors import NotFound
from limen.events.filelog import FileLog
from limen.events.search import parse_since, search
from limen.files import private_dir

__all__ = ["ACTOR", "LocalAdmin", "local_admin", "token_of"]

ONLINE_PREFIXES = {"dbs": DB_PRESENCE_PREFIX, "kubes": KUBE_PRESENCE_PREFIX,
                   "apps": APP_PRESENCE_PREFIX}

ACTOR = "admin"
"""The actor named in the audit events of offline changes."""


def token_of(url: str) -> str:
    """The token at the end of a sign-up link."""
    return url.rsplit("/", 1)[-1].split("?")[0]


class LocalAdmin:
    def __init__(self, server: AuthServer, events_dir: Path) -> None:
        self.server = server
        self.events_dir = events_dir

    async def apply(self, documents: Sequence[SourceDocument]) -> list[dict[str, str]]:
        plan = await self.server.apply(validate(documents), Origin.API, actor=ACTOR)
        return [{"kind": e.kind.value, "name": e.name, "action": e.action.value}
                for e in plan.entries]

    async def list_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r.to_document() for r in await self.server.store.list(parse_kind(kind))]

    async def get_one(self, kind: str, name: str) -> dict[str, Any]:
        return (await self.server.store.get(parse_kind(kind), name)).to_document()

    async def delete(self, kind: str, name: str) -> None:
        await self.server.remove(parse_kind(kind), name, Origin.API, actor=ACTOR)

    async def add_user(self, name: str, roles: list[str], logins: list[str],
                       ttl: int) -> dict[str, str]:
        _user, url = await self.server.add_user(name, roles, logins, actor=ACTOR,
                                                ttl_seconds=ttl)
        return {"url": url, "token": token_of(url)}

    async def invite(self, name: str, ttl: int) -> dict[str, str]:
        url = await self.server.invite(name, actor=ACTOR, ttl_seconds=ttl)
        return {"url": url, "token": token_of(url)}

    async def add_token(self, token_type: str, ttl: int, labels: Mapping[str, str],
                        single_use: bool = True) -> dict[str, Any]:
        secret, record = await self.server.create_token(
            token_type, timedelta(seconds=ttl), actor=ACTOR, labels=labels,
            single_use=single_use)
        return await self.server.token_answer(secret, record)

    async def events(self, types: list[str], user: str | None, since: str | None,
                     limit: int | None) -> list[dict[str, Any]]:
        return search(self.events_dir, types=types or None, user=user,
                      since=parse_since(since) if since else None, limit=limit,
                      descending=True)

    async def access_check(self, user: str, kind: str, name: str,
                           login: str | None) -> dict[str, Any]:
        if node_admin.is_node_kind(kind):
            found = await self.server.store.get(Kind.USER, user)
            target = await node_admin.resolve_node(self.server, name)
            return await self.server.access_check_target(found, target, login)
        return await self.server.access_check(user, parse_kind(kind), name, login)

    async def export_ca(self, ca_type: str) -> dict[str, Any]:
        return self.server.export_ca(CertAuthorityType(ca_type))

    async def rotate_ca(self, ca_type: str, change: Mapping[str, Any]) -> dict[str, Any]:
        grace = change.get("grace_period_seconds")
        return await rotate_ca(self.server, ca_type, actor=ACTOR, phase=change.get("phase"),
                               rollback=bool(change.get("rollback")),
                               manual=change.get("manual", True) is not False,
                               grace_period_seconds=grace if isinstance(grace, int) else None)

    async def status(self) -> dict[str, Any]:
        return {**self.server.status(), "listeners": {}}

    async def list_users(self) -> list[dict[str, Any]]:
        return await user_admin.list_users(self.server)

    async def update_user(self, name: str, roles: list[str] | None,
                          logins: list[str] | None) -> dict[str, Any]:
        return await user_admin.update_user(self.server, name, actor=ACTOR, roles=roles,
                                            logins=logins)

    async def remove_user(self, name: str) -> None:
        await user_admin.remove_user(self.server, name, actor=ACTOR)

    async def reset_user(self, name: str, ttl: int) -> dict[str, str]:
        url = await user_admin.reset_user(self.server, name, actor=ACTOR, ttl_seconds=ttl)
        return {"url": url, "token": token_of(url)}

    async def unlock_user(self, name: str) -> bool:
        return await user_admin.unlock_user(self.server, name, actor=ACTOR)

    async def list_nodes(self) -> list[dict[str, Any]]:
        return await node_admin.list_nodes(self.server)

    async def list_online(self, kind: str) -> list[dict[str, Any]]:
        return await presence.presence(self.server, ONLINE_PREFIXES[online_kind(kind)])

    async def list_tokens(self) -> list[dict[str, Any]]:
        return await token_admin.list_tokens(self.server)

    async def remove_token(self, ref: str) -> dict[str, Any]:
        return await token_admin.remove_token(self.server, ref, actor=ACTOR)

    async def gitops_status(self) -> dict[str, Any]:
        item = await self.server.backend.get(GITOPS_STATUS_KEY)
        if item is None:
            raise NotFound("this cluster has never synced from Git (start it with --gitops)")
        result: dict[str, Any] = json.loads(item.value)
        return result


@asynccontextmanager
async def local_admin(data_dir: Path) -> AsyncIterator[LocalAdmin]:
    settings = load_settings(overrides={"data_dir": str(data_dir)})
    private_dir(data_dir)
    sealer = ca_sealer_for(settings.backend)  # LIMEN_CA_KEY_FILE: the CAs are encrypted
    backend = open_backend(data_dir)
    events_dir = data_dir / "log" / "events"
    log = FileLog(events_dir)
    try:
        server = AuthServer(backend, settings.cluster, log, ca_sealer=sealer)
        await server.start(initialize=False)
        log.set_signer(audit_signer_source(server), start=False)  # seals only if it writes
        yield LocalAdmin(server, events_dir)
    finally:
        log.close()
        await backend.close()

