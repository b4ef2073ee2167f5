"""The leaf's TrustedCluster reconciler: a ``limen start`` service in the auth process.

For every TrustedCluster in the store (listed at start, then watched)::

    root CAs stored? ──no──▶ enabled? ──no──▶ status Ready=False Disabled (no handshake)
         │                      └─yes─▶ token from token_secret_ref ─▶ handshake with the
         │                              root proxy (limen.trust.handshake) ─▶ store the root's
         │                              CAs <type>.<root> (limen.dev/trust: trusted-cluster,
         │                              limen.dev/trusted-cluster: NAME)
         └─yes─▶ keep them; spec.disabled follows ``enabled`` (re-enabling needs no token)
    TrustedCluster deleted ─▶ its root CAs are removed

The token is read only from the configured places (``limen.trust.secrets.SecretSource``: a
file NAME in the secrets directory, a ``LIMEN_SECRET_*`` variable); a reference outside them
(which the loader refuses already) is refused here too, before any connection, as Stalled
``SecretRefRefused`` with an ``access.denied`` audit event. The token is sent only after the
root proxy's TLS CA matched ``ca_pin`` and its certificate proved to be that root's proxy (or
verified against the system trust store when there is no pin), and its announced name passed
``check_root`` (``limen.trust.handshake``).

A root's CAs also change after the handshake: a CA rotation at the root reaches this cluster as
a signed update that auth stores in place (``limen.auth.trusted_clusters.leaf_cas``); every
replica watches the CertAuthority resources too and refreshes its cache on each change of a
root's CAs, so the node agent in this process verifies root users against the new keys at
once.

The reconciler then writes ``status`` (``conditions`` Ready / Stalled with a reason,
``rootCluster``, ``observedRevision`` and ``observedSpec``, a digest of the reconciled spec)
and refreshes the :class:`~limen.trust.cache.TrustCache` the node agent reads. A failure
(token missing or refused, root unreachable, CA pin mismatch, name clash) is Stalled with the
reason and a refused ``join`` audit event (once per distinct reason); the object is retried
with exponential backoff, and nothing crashes the service. With ``leadership`` (several auth
replicas on one backend) only the replica holding the lease joins and writes; every replica
still refreshes its cache on each change, and a replica that takes the lease over reconciles
every TrustedCluster once. Called by ``limen.cli.compose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from limen.aio.backoff import Backoff
from limen.aio.tasks import cancel_and_wait
from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.wire import (
    CLUSTER_LABEL,
    EXCHANGED_TYPES,
    TRUST_LABEL,
    CASet,
    ValidateRequest,
    ValidateResponse,
)
from limen.backend.base import Condition, Put
from limen.ca.authority import CertAuthorityType
from limen.errors import AccessDenied, BadParameter, CompareFailed, LimenError, NotFound
from limen.services.leadership import Leadership
from limen.services.resource_store import encode, resource_key
from limen.trust.cache import (
    TRUST_TRUSTED_CLUSTER,
    TRUSTED_CLUSTER_LABEL,
    TrustCache,
    is_enabled,
)
from limen.trust.handshake import handshake
from limen.trust.rolemap import compile_role_map
from limen.trust.secrets import SecretSource

__all__ = ["REFUSED_REF", "TRUST_LEASE_KEY", "Handshake", "TrustedClusterReconciler"]

TRUST_LEASE_KEY = "/leases/trusted-clusters"
"""The lease of the replica that joins root clusters (``leadership``)."""

log = logging.getLogger(__name__)

REFUSED_REF = "SecretRefRefused"
"""Stalled reason of a ``token_secret_ref`` outside the configured places."""

Handshake = Callable[[str, str | None, ValidateRequest, Callable[[str], Awaitable[None]]],
                     Awaitable[ValidateResponse]]
"""``(proxy_address, ca_pin, request, check_root) -> answer`` (default: the real one)."""


async def _real_handshake(proxy: str, ca_pin: str | None, request: ValidateRequest,
                          check_root: Callable[[str], Awaitable[None]]) -> ValidateResponse:
    return await handshake(proxy, ca_pin, request, check_root=check_root)


class _Stalled(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _spec_digest(spec: Mapping[str, Any]) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TrustedClusterReconciler:
    """See the module doc. ``cache`` is what the node agent reads; ``secrets`` the only
    places a ``token_secret_ref`` may name."""

    name = "trusted-clusters"

    def __init__(self, auth: AuthServer, *, secrets: SecretSource,
                 handshake_fn: Handshake = _real_handshake, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, leadership: Leadership | None = None) -> None:
        self.auth = auth
        self.store = auth.store
        self.cache = TrustCache(auth.store, lambda: auth.cluster_name)
        self.secrets = secrets
        self._handshake = handshake_fn
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._backoffs: dict[str, Backoff] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.leadership = leadership

    @property
    def leading(self) -> bool:
        """Does this replica join and write (always, without ``leadership``)?"""
        return self.leadership is None or self.leadership.leading

    # -- service ---------------------------------------------------------------------------
    async def start(self) -> dict[str, str]:
        await asyncio.to_thread(self.secrets.ensure_directory)
        await self.cache.refresh()
        if self.leadership is not None:
            await self.leadership.start()
        self._tasks = [asyncio.create_task(self._watch(), name="trusted-clusters-watch"),
                       asyncio.create_task(self._watch_cas(), name="trusted-clusters-cas"),
                       asyncio.create_task(self._work(), name="trusted-clusters-work")]
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(self._follow(self.leadership),
                                                   name="trusted-clusters-leader"))
        return {}

    async def stop(self) -> None:
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        if self.leadership is not None:
            await self.leadership.stop()

    async def _follow(self, leadership: Leadership) -> None:
        """Each time this replica takes the lease, reconcile every TrustedCluster once (what
        the former leader left half done, or what changed while it led)."""
        backoff = Backoff(self._backoff_base, self._backoff_cap)
        while True:
            await leadership.wait_until(True)
            log.info("trusted clusters: this replica holds the lease; reconciling them all")
            try:  # the lease is often retaken just as the backend comes back: it may fail
                names = await self._known_names()
            except LimenError as err:
                log.warning("trusted clusters: cannot list them yet (%s); trying again", err)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            for name in names:
                self._queue.put_nowait(name)
            await leadership.wait_until(False)
            log.warning("trusted clusters: another replica holds the lease; following")

    async def _watch(self) -> None:
        """Queue every TrustedCluster (and orphaned root CA owner) now, then each change."""
        backoff = Backoff(self._backoff_base, self._backoff_cap)
        while True:
            try:
                after = await self.store.backend.current_revision()
                for name in await self._known_names():
                    self._queue.put_nowait(name)
                async for change in self.store.watch(Kind.TRUSTED_CLUSTER, after=after):
                    backoff.reset()
                    self._queue.put_nowait(change.name)
            except asyncio.CancelledError:
                raise
            except Exception:  # a closed or compacted watch: list again after a pause
                log.exception("trusted cluster watch failed; listing again")
            await asyncio.sleep(backoff.next_delay())

    async def _watch_cas(self) -> None:
        """Refresh the cache on every change of another cluster's CA (a root's CA update)."""
        backoff = Backoff(self._backoff_base, self._backoff_cap)
        own = f".{self.auth.cluster_name}"
        while True:
            try:
                after = await self.store.backend.current_revision()
                await self.cache.refresh()
                async for change in self.store.watch(Kind.CERT_AUTHORITY, after=after):
                    backoff.reset()
                    if not change.name.endswith(own):
                        await self.cache.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a closed or compacted watch: read again after a pause
                log.exception("trusted root CA watch failed; reading again")
            await asyncio.sleep(backoff.next_delay())

    async def _known_names(self) -> set[str]:
        names = {r.name for r in await self.store.list(Kind.TRUSTED_CLUSTER)}
        names.update(r.labels[TRUSTED_CLUSTER_LABEL]
                     for r in await self.store.list(Kind.CERT_AUTHORITY)
                     if r.labels.get(TRUST_LABEL) == TRUST_TRUSTED_CLUSTER
                     and TRUSTED_CLUSTER_LABEL in r.labels)
        return names

    async def _work(self) -> None:
        while True:
            name = await self._queue.get()
            try:
                if not self.leading:  # the leader joins and writes; this replica follows
                    await self.cache.refresh()
                    continue
                await self.reconcile(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling TrustedCluster %s failed", name)
                self._retry_later(name)

    def _retry_later(self, name: str) -> None:
        backoff = self._backoffs.setdefault(name, Backoff(self._backoff_base,
                                                          self._backoff_cap))
        delay = max(backoff.next_delay(), self._backoff_base / 2)
        old = self._retries.pop(name, None)
        if old is not None:
            old.cancel()
        self._retries[name] = asyncio.get_running_loop().call_later(
            delay, self._queue.put_nowait, name)

    # -- one object ------------------------------------------------------------------------
    async def reconcile(self, name: str) -> None:
        """Bring the root CAs of TrustedCluster ``name`` and its status in line with its spec."""
        resource = await self.store.find(Kind.TRUSTED_CLUSTER, name)
        try:
            if resource is None:
                await self._remove_cas(name)
                self._backoffs.pop(name, None)
                return
            try:
                root = await self._converge(resource)
            except _Stalled as stalled:
                await self._failed(resource, stalled)
                self._retry_later(name)
                return
            self._backoffs.pop(name, None)
            await self._write_status(resource, root, None)
        finally:
            await self.cache.refresh()

    async def _converge(self, resource: Resource) -> str | None:
        """The root cluster name once its CAs are stored (None: disabled, never joined)."""
        try:
            compile_role_map(resource.spec.get("role_map") or [])
        except BadParameter as err:
            raise _Stalled("InvalidRoleMap", str(err)) from None
        enabled = is_enabled(resource)
        cas = await self._own_cas(resource.name)
        if cas:
            for ca in cas:
                if bool(ca.spec.get("disabled")) == (not enabled):
                    continue
                spec = {k: v for k, v in ca.spec.items() if k != "disabled"}
                if not enabled:
                    spec["disabled"] = True
                await self.store.update(ca.replace(spec=spec))
            return str(cas[0].labels.get(CLUSTER_LABEL, "")) or None
        if not enabled:
            return None
        return await self._join(resource)

    async def _own_cas(self, name: str) -> list[Resource]:
        return [r for r in await self.store.list(Kind.CERT_AUTHORITY)
                if r.labels.get(TRUST_LABEL) == TRUST_TRUSTED_CLUSTER
                and r.labels.get(TRUSTED_CLUSTER_LABEL) == name]

    async def _join(self, resource: Resource) -> str:
        spec = resource.spec
        try:
            token = await asyncio.to_thread(self.secrets.resolve, spec.get("token_secret_ref"))
        except AccessDenied as err:
            raise _Stalled(REFUSED_REF, str(err)) from None
        except BadParameter as err:
            raise _Stalled("TokenUnavailable", str(err)) from None
        own = {t: self.auth.authorities.get(t).public_only() for t in EXCHANGED_TYPES}
        request = ValidateRequest(token, self.auth.cluster_name, CASet.of(own))
        proxy = str(spec.get("proxy_address", ""))
        ca_pin = spec.get("ca_pin")
        try:

            async def check_root(root: str) -> None:
                await self._check_root(resource.name, root)

            answer = await self._handshake(proxy, str(ca_pin) if ca_pin else None, request,
                                           check_root)
        except _Stalled:
            raise
        except AccessDenied as err:
            reason = "PinMismatch" if "does not match the pin" in str(err) else "Refused"
            raise _Stalled(reason, str(err)) from None
        except LimenError as err:
            raise _Stalled("RootUnavailable", str(err)) from None
        root = answer.root_cluster
        await self._check_root(resource.name, root)
        puts, conditions = [], []
        for ca in answer.cas.authorities(root):
            ca_name = ca_resource_name(ca.type, root)
            stored = Resource(Kind.CERT_AUTHORITY, ca_name, spec=ca.to_dict(), labels={
                CLUSTER_LABEL: root, TRUST_LABEL: TRUST_TRUSTED_CLUSTER,
                TRUSTED_CLUSTER_LABEL: resource.name})
            key = resource_key(Kind.CERT_AUTHORITY, ca_name)
            puts.append(Put(key, encode(stored)))
            conditions.append(Condition(key, 0))
        try:
            await self.store.backend.atomic(conditions, puts)
        except CompareFailed:
            raise _Stalled("NameConflict", f"CAs of cluster {root!r} are already stored "
                                           "here") from None
        await self.auth.emit("join", role="trusted_cluster", trusted_cluster=resource.name,
                             root_cluster=root, proxy_address=proxy)
        return root

    async def _check_root(self, name: str, root: str) -> None:
        """Before the token is sent: the root must not be this cluster or trusted already."""
        if not root:
            raise _Stalled("Refused", "the root proxy did not say which cluster it serves")
        if root == self.auth.cluster_name:
            raise _Stalled("NameConflict", f"the root cluster is named {root!r} like this "
                                           "cluster; cluster names must differ")
        known = await self.store.find(Kind.CERT_AUTHORITY,
                                      ca_resource_name(CertAuthorityType.USER, root))
        owner = known.labels.get(TRUSTED_CLUSTER_LABEL) if known is not None else None
        if known is not None and owner != name:
            raise _Stalled("NameConflict", f"cluster {root!r} is already trusted here"
                           + (f" through TrustedCluster {owner!r}" if owner else ""))

    async def _remove_cas(self, name: str) -> None:
        for ca in await self._own_cas(name):
            with contextlib.suppress(NotFound):
                await self.store.delete(Kind.CERT_AUTHORITY, ca.name)

    # -- status ----------------------------------------------------------------------------
    async def _failed(self, resource: Resource, stalled: _Stalled) -> None:
        previous = _condition(resource.status, "Stalled")
        if previous is None or previous.get("message") != stalled.message:
            if stalled.reason == REFUSED_REF:
                await self.auth.emit("access.denied", action="trusted_cluster.token_secret_ref",
                                     trusted_cluster=resource.name, reason=stalled.message,
                                     token_secret_ref=resource.spec.get("token_secret_ref"))
            await self.auth.emit("join", success=False, role="trusted_cluster",
                                 trusted_cluster=resource.name, reason=stalled.message,
                                 proxy_address=str(resource.spec.get("proxy_address", "")))
        await self._write_status(resource, None, stalled)

    async def _write_status(self, resource: Resource, root: str | None,
                            stalled: _Stalled | None) -> None:
        if stalled is not None:
            ready = ("False", stalled.reason, stalled.message)
            stall = ("True", stalled.reason, stalled.message)
        elif root is None:
            ready = ("False", "Disabled", "disabled before the first handshake: no root CA "
                                          "is trusted")
            stall = ("False", "Disabled", "")
        elif not is_enabled(resource):
            ready = ("False", "Disabled", f"the CAs of root cluster {root} are kept but "
                                          "not trusted while disabled")
            stall = ("False", "Disabled", "")
        else:
            ready = ("True", "Trusted", f"the user and host CAs of root cluster {root} are "
                                        "trusted under the role_map")
            stall = ("False", "Trusted", "")
        digest = _spec_digest(resource.spec)
        root = root or resource.status.get("rootCluster")
        status: dict[str, Any] = {
            "observedSpec": digest,
            "conditions": [_merge(resource.status, "Ready", *ready),
                           _merge(resource.status, "Stalled", *stall)],
        }
        if root:
            status["rootCluster"] = root
        if _same(resource.status, status):
            return
        status["observedRevision"] = resource.revision
        try:
            await self.store.update(resource.replace(status=status))
        except (CompareFailed, NotFound):
            self._queue.put_nowait(resource.name)  # changed meanwhile: look again


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in status.get("conditions") or []:
        if isinstance(item, dict) and item.get("type") == kind:
            return item
    return None


def _merge(status: Mapping[str, Any], kind: str, value: str, reason: str,
           message: str) -> dict[str, Any]:
    """A metav1.Condition; ``lastTransitionTime`` moves only when ``status`` changes."""
    previous = _condition(status, kind)
    when = (previous.get("lastTransitionTime") if previous and previous.get("status") == value
            else None) or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": kind, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": when}


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in new.items()) and \
        old.get("rootCluster") == new.get("rootCluster")
