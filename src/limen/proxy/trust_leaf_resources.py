"""The leaf proxy's side of database and Kubernetes access for users of a root cluster.

::

    root proxy ──dial {kind db|kube, target, user cert PEM} over the cluster link──▶
    LeafLinks._prepare ─▶ LeafResourceDials.prepare(root, request)   BEFORE any data
         1. the certificate verifies against the root's TLS CA (the one this cluster's
            TrustedCluster admitted, for cluster ROOT, never another), unexpired, a user's,
            for ``db``/``kube`` usage, routed to THIS cluster (route_to_cluster)
         2. its roles go through the root's role_map (read now); nothing mapped: refused
         3. the root's locks on the user or its root roles refuse it (RootLocks)
         4. kube: the cluster is online here and the MAPPED roles admit its labels
            (kubernetes_labels); db: the database is online here
    data connection ─▶ serve():
         5. mutual TLS: this proxy presents its proxy certificate; the root's proxy must show
            its proxy certificate signed by the root's TLS CA
         6. the first message (db session request / kube connection request) must carry the
            very certificate of the dial and its route
         7. db: the MAPPED roles decide the database user and name (db_labels, db_users,
            db_names, deny first) ─▶ this proxy's router opens the agent (the db or kube agent
            verifies the certificate and decides again; its audit names user_cluster); a
            PostgreSQL cancel of a forwarded session (op ``cancel``, the key the root's front
            kept) needs the same roles' ``db_labels`` + ``db_users`` and goes to the agent
         8. relay: root data connection ◀──▶ agent connection; a lock of the root on the user
            cuts it (RootSessionGuard: at once under the mapped roles' ``lock: strict``, at
            the next check otherwise), audited
       any refusal ─▶ audited here (access.denied, user_cluster ROOT, action db|kube) and
                      answered: dial_failed before the data connection, a PostgreSQL/MySQL
                      error or a Kubernetes Status after it

Called by :mod:`limen.proxy.trust_leaf_links` for dials of kind db and kube.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.dbproto import mysql as my
from limen.dbproto import postgres as pg
from limen.dbproto.session_request import SessionRequest, decode_request, request_length
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound
from limen.net.streams import accept_tls, both_ways, close_writer, copy_stream
from limen.proxy.db.db_route import DBRouter, DBTarget, default_db_name
from limen.proxy.kube.kube_route import KubeRouter, KubeTarget
from limen.proxy.trust_leaf_listing import ListingDial, db_listing, kube_listing
from limen.trust.cache import TrustedRoot, TrustView, as_local_user
from limen.trust.root_locks import RootLocks
from limen.trust.root_session_locks import RootSessionGuard
from limen.tunnel.agent_settings import PreparedDial
from limen.tunnel.kube_wire import KubeConnect, connect_length, decode_connect
from limen.tunnel.protocol import KIND_DB, DialRequest

__all__ = ["LeafResourceDials", "Routers"]

log = logging.getLogger(__name__)

Routers = tuple[DBRouter | None, KubeRouter | None]
"""This proxy's db and kube routers (None: that front is not running here)."""
Audit = Callable[..., Awaitable[None]]
_FIRST_TIMEOUT = 15.0


class LeafResourceDials:
    """See the module doc. ``routers()`` gives this proxy's routers once started; ``audit``
    writes a refusal (``access.denied``)."""

    def __init__(self, cache: TrustView, credentials: Callable[[], HostCredentials | None],
                 routers: Callable[[], Routers], root_locks: RootLocks, audit: Audit, *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 guard: RootSessionGuard | None = None) -> None:
        self.cache = cache
        self.credentials = credentials
        self.routers = routers
        self.root_locks = root_locks
        self.audit = audit
        self.now = now
        self.guard = guard
        """Cuts the sessions of users the root locks (None: checked at the start only)."""

    async def prepare(self, root_name: str, request: DialRequest) -> PreparedDial:
        """Steps 1-4 of the module doc; a refusal is audited and raised."""
        fields: dict[str, Any] = {"user_cluster": root_name, "target": request.target,
                                  "remote_addr": request.client_addr, "via": "cluster link",
                                  "session_id": request.session_id, "action": request.kind}
        user: str | None = request.user or None
        try:
            creds = self.credentials()
            if creds is None:
                raise AccessDenied("this proxy is not started")
            root = self.cache.roots.get(root_name)
            if root is None:
                raise AccessDenied(f"cluster {root_name!r} is no longer trusted here")
            cas = _root_cas(root)
            listing = not request.target
            identity = self._verify(root_name, cas, request, creds.cluster, listing=listing)
            user = identity.username
            local = as_local_user(self.cache, identity, root_name)
            fields["roles"] = list(local.roles)
            db, kube = self.routers()
            router = db if request.kind == KIND_DB else kube
            if router is None:
                raise NotFound(f"this cluster's proxy serves no {request.kind} access")
            role_set = await router.view.role_set(local)
            mode = role_set.options.lock
            self.root_locks.check(identity, strict=mode == "strict")
            if listing:
                items = (await db_listing(router, role_set, local.username)
                         if isinstance(router, DBRouter) else
                         await kube_listing(router, role_set))

                async def refused(reason: str) -> None:
                    await self.audit(identity.username, reason=reason, **fields)

                return ListingDial(creds, cas, root_name, items, self.now, refused)
            if isinstance(router, KubeRouter):
                kube_target = await router.find(request.target)
                decision = role_set.check_kube(kube_target.labels)
                if not decision.allowed:
                    raise AccessDenied(f"access to kube cluster {request.target} denied: "
                                       f"{decision.reason}")
                return _ResourceDial(self, creds, cas, root_name, local, request,
                                     fields, kube=(router, kube_target),
                                     guarded=(identity, mode))
            assert isinstance(router, DBRouter)
            db_target = await router.find(request.target)
            return _ResourceDial(self, creds, cas, root_name, local, request, fields,
                                 db=(router, db_target), guarded=(identity, mode))
        except (AccessDenied, NotFound, BadParameter) as err:
            await self.audit(user, reason=str(err), **fields)
            raise

    def _verify(self, root_name: str, cas: Sequence[x509.Certificate], request: DialRequest,
                cluster: str, *, listing: bool) -> Identity:
        if not request.cert:
            raise AccessDenied("the root sent no user certificate")
        identity = verify_client_cert(request.cert, {root_name: list(cas)}, self.now())
        if identity.is_system:
            raise AccessDenied("a certificate of a Limen process cannot open user sessions")
        if listing:  # the user's login certificate (or one routed here)
            if identity.route_to_cluster not in (None, cluster):
                raise AccessDenied(f"the certificate is routed to cluster "
                                   f"{identity.route_to_cluster!r}, not {cluster!r}")
            return identity
        if request.kind not in identity.usage:
            raise AccessDenied(f"the certificate is not for {request.kind} access")
        if identity.route_to_cluster != cluster:
            raise AccessDenied(f"the certificate is routed to cluster "
                               f"{identity.route_to_cluster or root_name!r}, not {cluster!r}")
        named = (identity.route_to_db.service if identity.route_to_db is not None else None) \
            if request.kind == KIND_DB else identity.route_to_kube
        if named != request.target:
            raise AccessDenied(f"the certificate is for {named!r}, not {request.target!r}")
        return identity


def _root_cas(root: TrustedRoot) -> list[x509.Certificate]:
    if root.tls_ca is None:
        raise AccessDenied(f"no TLS CA of cluster {root.root_cluster!r} is trusted here")
    return list(root.tls_ca.trusted_certificates())


class _ResourceDial:
    """A prepared db or kube dial: steps 5-8 of the module doc on the root's data socket."""

    def __init__(self, dials: LeafResourceDials, creds: HostCredentials,
                 cas: list[x509.Certificate], root_name: str, identity: Identity,
                 request: DialRequest, fields: dict[str, Any], *,
                 db: tuple[DBRouter, DBTarget] | None = None,
                 kube: tuple[KubeRouter, KubeTarget] | None = None,
                 guarded: tuple[Identity, str | None]) -> None:
        self.dials, self.creds, self.cas, self.root_name = dials, creds, cas, root_name
        self.identity, self.request, self.fields = identity, request, fields
        self.db, self.kube = db, kube
        self.guarded = guarded
        """The root identity (its root roles) and the lock mode the root's locks apply to."""

    async def serve(self, sock: socket.socket) -> None:
        context = self.creds.server_ssl(client_cas=self.cas, require_client_cert=True)
        try:
            reader, writer = await accept_tls(sock, context)
        except (ssl.SSLError, OSError, TimeoutError) as err:
            sock.close()
            await self.dials.audit(self.identity.username,
                                   reason=f"TLS with the root's proxy failed: {err}",
                                   **self.fields)
            return
        await self._session(reader, writer)

    def cancel(self) -> None:
        """Nothing is held before the data connection."""

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            try:
                self._check_root_proxy(writer)
                async with asyncio.timeout(_FIRST_TIMEOUT):
                    if self.db is not None:
                        upstream = await self._open_db(reader, writer, *self.db)
                    else:
                        assert self.kube is not None
                        upstream = await self._open_kube(reader, writer, *self.kube)
            except (LimenError, OSError, TimeoutError, asyncio.IncompleteReadError) as err:
                await self.dials.audit(self.identity.username, reason=str(err) or
                                       type(err).__name__, **self.fields)
                return
            if upstream is None:
                return
            up_reader, up_writer = upstream
            untrack = self._guard(writer, up_writer)
            try:
                await both_ways(copy_stream(reader, up_writer),
                                copy_stream(up_reader, writer), grace=5.0)
            finally:
                untrack()
                await close_writer(up_writer)
        finally:
            await close_writer(writer)

    def _guard(self, writer: asyncio.StreamWriter, up_writer: asyncio.StreamWriter
               ) -> Callable[[], None]:
        """Cut the relay when a lock of the root targets the user; the call that stops it."""
        guard = self.dials.guard
        if guard is None:
            return lambda: None

        async def end(reason: str, lock: dict[str, Any]) -> None:
            writer.close()
            up_writer.close()
            await self.dials.audit(self.identity.username, **{
                **self.fields, "reason": reason, "rule": "lock", **lock})

        return guard.track(*self.guarded, end)

    def _check_root_proxy(self, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        proxy = verify_client_cert(der or b"", {self.root_name: self.cas}, self.dials.now())
        if proxy.system_role is not SystemRole.PROXY:
            raise AccessDenied(f"a {proxy.system_role or 'user'} certificate of "
                               f"{self.root_name} opened the data connection, not its proxy")

    async def _open_db(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       router: DBRouter, target: DBTarget
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        size = request_length(await reader.readexactly(4))
        request = decode_request(await reader.readexactly(size))
        try:
            if request.op not in ("connect", "cancel") or request.service != target.name:
                raise AccessDenied("the session request does not match the dial")
            if request.op == "cancel" and request.protocol != "postgres":
                raise AccessDenied("only a PostgreSQL session can be cancelled")
            if request.user_cert.strip() != self.request.cert.strip():
                raise AccessDenied("the session request carries another certificate")
            if target.protocol != request.protocol:
                raise AccessDenied(f"{target.name} is a {target.protocol} database, not "
                                   f"{request.protocol}")
            if request.op == "cancel":  # the key is the proof; the user must still be let in
                await router.decide(self.identity, target, request.db_user, "")
                return await router.open(target, request, self.identity.username)
            db_name = request.db_name or default_db_name(request.protocol, target,
                                                         request.db_user)
            await router.decide(self.identity, target, request.db_user, db_name)
            request = replace(request, db_name=db_name)
            return await router.open(target, request, self.identity.username)
        except LimenError as err:
            await self.dials.audit(self.identity.username, reason=str(err),
                                   db_user=request.db_user, db_name=request.db_name,
                                   **self.fields)
            await _db_error(writer, request, str(err))
            return None

    async def _open_kube(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         router: KubeRouter, target: KubeTarget
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        size = connect_length(await reader.readexactly(4))
        connect = decode_connect(await reader.readexactly(size))
        if connect.cluster != target.name or \
                connect.user_cert.strip() != self.request.cert.strip():
            raise AccessDenied("the kube connection request does not match the dial")
        try:
            return await router.open(target, KubeConnect(
                target.name, connect.user_cert, connect.client_addr, connect.session_id),
                self.identity.username)
        except LimenError as err:
            await self.dials.audit(self.identity.username, reason=str(err), **self.fields)
            writer.write(_kube_status(str(err)))
            await writer.drain()
            return None


async def _db_error(writer: asyncio.StreamWriter, request: SessionRequest,
                    message: str) -> None:
    """The refusal in the client's own protocol (the root's front relays it)."""
    if request.protocol == "postgres":
        writer.write(pg.error_response(message, "28000"))
    else:
        raw = request.params.get("seq", "3")
        seq = int(raw) if raw.isdigit() else 3
        writer.write(my.encode_packet(seq, my.err_payload(1045, "28000",
                                                          f"Limen: {message}")))
    await writer.drain()


def _kube_status(message: str) -> bytes:
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": "Forbidden",
                       "code": 403}).encode()
    return (f"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

