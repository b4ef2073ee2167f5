"""What a root user may reach among this leaf cluster's databases and kube clusters.

``lmsh db ls --cluster LEAF`` / ``lmsh kube ls --cluster LEAF`` at the root end here: the root
proxy dials this proxy over the cluster link with kind db or kube and an empty target, and
the user's certificate (:meth:`limen.proxy.leaf_forward.LeafForwarder.listing`);
:class:`~limen.proxy.trust_leaf_resources.LeafResourceDials` verifies it and maps the roles,
then :func:`db_listing` / :func:`kube_listing` decide with the MAPPED roles, as this cluster's
auth decides ``lmsh db ls`` / ``lmsh kube ls`` for its own users, and :class:`ListingDial`
answers on the data connection (mutual TLS with the root's proxy, one JSON document, close).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied
from limen.net.streams import accept_tls, close_writer
from limen.proxy.db.db_route import DBRouter
from limen.proxy.kube.kube_route import KubeRouter
from limen.rbac import RoleSet, db_own_name

__all__ = ["ListingDial", "db_listing", "kube_listing"]

def _labels(resource: Any) -> dict[str, str]:
    raw = ((resource or {}).get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in raw.items()}


async def db_listing(router: DBRouter, role_set: RoleSet, username: str
                     ) -> list[dict[str, Any]]:
    """The online databases here with the database users ``role_set`` (the mapped roles)
    allows there, as this cluster's auth lists them for its own users (``username`` alone
    where the database creates the user's own database user)."""
    seen: dict[str, dict[str, Any]] = {}
    for record in await router.view.databases():
        resource = record.get("resource") or {}
        name = str((resource.get("metadata") or {}).get("name", ""))
        if not name or name in seen:
            continue
        labels = _labels(resource)
        spec = resource.get("spec") or {}
        users = list(role_set.db_users_on(labels, role_set.db_users(),
                                          own_name=db_own_name(spec, username)))
        if not users:
            continue
        seen[name] = {"name": name, "protocol": str(spec.get("protocol", "")),
                      "labels": labels, "description": str(spec.get("description", "")),
                      "database": str(spec.get("database", "") or ""), "db_users": users,
                      "db_names": list(role_set.db_names())}
    return [seen[n] for n in sorted(seen)]


async def kube_listing(router: KubeRouter, role_set: RoleSet) -> list[dict[str, Any]]:
    """The online kube clusters here that ``role_set`` admits, with the groups and users
    granted there."""
    seen: dict[str, dict[str, Any]] = {}
    for record in await router.presence():
        resource = record.get("resource") or {}
        name = str((resource.get("metadata") or {}).get("name", ""))
        labels = _labels(resource)
        if not name or name in seen or not role_set.check_kube(labels).allowed:
            continue
        groups, users = role_set.kube_principals(labels)
        seen[name] = {"name": name, "labels": labels,
                      "description": str((resource.get("spec") or {}).get("description", "")),
                      "kubernetes_groups": list(groups), "kubernetes_users": list(users)}
    return [seen[n] for n in sorted(seen)]


class ListingDial:
    """A prepared listing: mutual TLS with the root's proxy, the JSON document, close."""

    def __init__(self, creds: HostCredentials, cas: list[x509.Certificate], root_name: str,
                 items: list[dict[str, Any]], now: Callable[[], Any],
                 audit: Callable[[str], Awaitable[None]]) -> None:
        self.creds, self.cas, self.root_name = creds, cas, root_name
        self.body = json.dumps({"items": items}, separators=(",", ":")).encode()
        self.now = now
        self.audit = audit

    async def serve(self, sock: socket.socket) -> None:
        context = self.creds.server_ssl(client_cas=self.cas, require_client_cert=True)
        try:
            _reader, writer = await accept_tls(sock, context)
        except (ssl.SSLError, OSError, TimeoutError) as err:
            sock.close()
            await self.audit(f"TLS with the root's proxy failed: {err}")
            return
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            proxy = verify_client_cert(der or b"", {self.root_name: self.cas}, self.now())
            if proxy.system_role is not SystemRole.PROXY:
                raise AccessDenied("the data connection is not from the root's proxy")
            writer.write(self.body)
            await writer.drain()
        except (AccessDenied, OSError, asyncio.IncompleteReadError) as err:
            await self.audit(str(err))
        finally:
            await close_writer(writer)

    def cancel(self) -> None:
        """Nothing is held before the data connection."""
