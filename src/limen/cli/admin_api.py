"""What ``lmctl`` calls: the auth API of a running cluster, or the data directory itself.

``open_admin`` picks (docs/architecture.md, "Command lines"): ``--auth HOST:PORT -i DIR``
→ that auth server with that identity; ``--data-dir DIR`` → the auth server of the cluster
running from DIR (its ``listeners.json`` and admin identity), and only when none runs, DIR's
store directly through an in-process ``AuthServer`` (same validation, ownership and audit
events). Both answer with the same JSON-shaped data: the :class:`AdminApi` protocol of
``limen.cli.admin_protocol`` (re-exported here for the command modules). A DIR without a
cluster's store is refused before anything is created (``require_cluster_dir``), unless an
offline ``lmctl apply`` bootstraps it. Called by the ``lmctl`` command modules through
``limen.cli.lmctl_run``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from limen.api.resources import parse_kind
from limen.auth.client import AuthClient
from limen.backend.sqlite import DB_FILENAME
from limen.ca.host_credentials import HostCredentials
from limen.cli.admin_protocol import AdminApi, online_kind
from limen.errors import BadParameter, ConnectionProblem

if TYPE_CHECKING:
    from limen.api.loader import SourceDocument

__all__ = ["AdminApi", "open_admin", "require_cluster_dir"]


class RemoteAdmin:
    def __init__(self, client: AuthClient, listeners: Mapping[str, str]) -> None:
        self.client = client
        self.listeners = dict(listeners)

    async def apply(self, documents: Sequence[SourceDocument]) -> list[dict[str, str]]:
        from limen.api.validation import validate  # jsonschema: loaded only to apply

        validate(documents)  # fail early, locally, with file names and lines
        payload = [{"source": d.source, "index": d.index, "line": d.line, "document": d.data}
                   for d in documents]
        return await self.client.apply(payload)

    async def list_kind(self, kind: str) -> list[dict[str, Any]]:
        return await self.client.list(parse_kind(kind).plural)

    async def get_one(self, kind: str, name: str) -> dict[str, Any]:
        return await self.client.get(parse_kind(kind).plural, name)

    async def delete(self, kind: str, name: str) -> None:
        await self.client.delete(parse_kind(kind).plural, name)

    async def add_user(self, name: str, roles: list[str], logins: list[str],
                       ttl: int) -> dict[str, str]:
        result: dict[str, str] = await self.client.call(
            "POST", "/v1/users",
            {"name": name, "roles": roles, "logins": logins, "ttl_seconds": ttl})
        return result

    async def invite(self, name: str, ttl: int) -> dict[str, str]:
        result: dict[str, str] = await self.client.call(
            "POST", f"/v1/users/{name}/invite", {"ttl_seconds": ttl})
        return result

    async def add_token(self, token_type: str, ttl: int, labels: Mapping[str, str],
                        single_use: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/tokens", {"type": token_type, "ttl_seconds": ttl, "labels": labels,
                                   "single_use": single_use})
        return result

    async def events(self, types: list[str], user: str | None, since: str | None,
                     limit: int | None) -> list[dict[str, Any]]:
        params: list[tuple[str, str]] = [("type", t) for t in types]
        if user:
            params.append(("user", user))
        if since:
            params.append(("since", since))
        if limit:
            params.append(("limit", str(limit)))
        params.append(("order", "newest"))
        answer = await self.client.call("GET", "/v1/events", None, params)
        return list(answer["events"])

    async def access_check(self, user: str, kind: str, name: str,
                           login: str | None) -> dict[str, Any]:
        params = {"user": user, "kind": kind, "name": name}
        if login:
            params["login"] = login
        result: dict[str, Any] = await self.client.call("GET", "/v1/access/check", None, params)
        return result

    async def export_ca(self, ca_type: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", f"/v1/authorities/{ca_type}")
        return result

    async def rotate_ca(self, ca_type: str, change: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/authorities/{quote(ca_type, safe='')}/rotate", dict(change))
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", "/v1/status")
        return {**result, "listeners": self.listeners}

    async def gitops_status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", "/v1/gitops/status")
        return result

    async def list_users(self) -> list[dict[str, Any]]:
        return list((await self.client.call("GET", "/v1/admin/users"))["items"])

    async def update_user(self, name: str, roles: list[str] | None,
                          logins: list[str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if roles is not None:
            body["roles"] = roles
        if logins is not None:
            body["logins"] = logins
        result: dict[str, Any] = await self.client.call(
            "PATCH", f"/v1/admin/users/{quote(name, safe='')}", body)
        return result

    async def remove_user(self, name: str) -> None:
        await self.client.call("DELETE", f"/v1/admin/users/{quote(name, safe='')}")

    async def reset_user(self, name: str, ttl: int) -> dict[str, str]:
        result: dict[str, str] = await self.client.call(
            "POST", f"/v1/admin/users/{quote(name, safe='')}/reset", {"ttl_seconds": ttl})
        return result

    async def unlock_user(self, name: str) -> bool:
        answer = await self.client.call("POST", f"/v1/admin/users/{quote(name, safe='')}/unlock",
                                        {})
        return bool(answer["was_locked"])

    async def list_nodes(self) -> list[dict[str, Any]]:
        return list((await self.client.call("GET", "/v1/admin/nodes"))["items"])

    async def list_online(self, kind: str) -> list[dict[str, Any]]:
        return list((await self.client.call("GET", f"/v1/presence/{online_kind(kind)}"))["items"])

    async def list_tokens(self) -> list[dict[str, Any]]:
        return list((await self.client.call("GET", "/v1/admin/tokens"))["items"])

    async def remove_token(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "DELETE", f"/v1/admin/tokens/{quote(ref, safe='')}")
        return result


def require_cluster_dir(data_dir: Path) -> None:
    """Refuse a data directory that holds no cluster (missing, empty, or without the store),
    touching nothing: no directory, no file is created by looking."""
    if (data_dir / DB_FILENAME).is_file():
        return
    what = ("does not exist" if not data_dir.exists() else
            "is not a directory" if not data_dir.is_dir() else
            f"holds no Limen cluster (no {DB_FILENAME})")
    raise BadParameter(
        f"{data_dir} {what}: start a cluster there with `limen start --data-dir {data_dir}`, "
        "or pass the data directory of an existing cluster (--data-dir or LIMEN_DATA_DIR)")


@asynccontextmanager
async def open_admin(data_dir: Path, auth: str | None = None, identity: Path | None = None,
                     *, bootstrap: bool = False) -> AsyncIterator[AdminApi]:
    """``bootstrap``: an offline ``lmctl apply`` may create the store of a fresh directory
    (the one bootstrap path); every other command refuses a directory without a cluster."""
    if auth:
        creds = HostCredentials.load(identity or data_dir / "admin")
        async with AuthClient(auth, creds, blocking=True) as client:
            await client.ping()
            yield RemoteAdmin(client, {"auth": auth})
        return
    listeners = _running_listeners(data_dir)
    if listeners.get("auth") and (data_dir / "admin").is_dir():
        client = AuthClient(listeners["auth"], HostCredentials.load(data_dir / "admin"),
                            blocking=True)
        try:
            await client.ping()
        except ConnectionProblem:
            await client.close()  # a stale listeners.json: nothing runs from this directory
        else:
            try:
                yield RemoteAdmin(client, listeners)
            finally:
                await client.close()
            return
    if not bootstrap:
        require_cluster_dir(data_dir)
    from limen.cli.admin_local import local_admin  # the whole auth server: only offline

    async with local_admin(data_dir) as local:
        yield local


def _running_listeners(data_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((data_dir / "listeners.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
