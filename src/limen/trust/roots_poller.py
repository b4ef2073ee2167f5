"""What a node or proxy running apart from auth trusts: auth's trust answer, polled.

::

    RemoteTrustCache ──every `interval` s──▶ auth GET /v1/trust/roots?revision=R
      (node: through its tunnel's route to auth; proxy: the auth API directly)
      ◀── unchanged ─────────────── keep everything; the answer is fresh again
      ◀── {user_ca, host_ca, ────── own user and host CA keys and their rotation phases +
           rotation, roots}         the enabled roots, each with
                                    its user/host/TLS CAs (public only), addresses and role_map
                                    ─▶ wait_changed() wakes LeafLinks (the proxy's root links)
      ✗ auth unreachable ────────── keep the last answer for `max_stale` s (60), then drop
                                    every root: only this cluster's own users stay trusted

Pushed instead of polled (issue #17): a node's tunnel agent hands it auth's answer signed by
auth, which its proxies fetch once and push to every agent (``limen.proxy.trust_push``)::

    proxy ── tunnel ``trust`` {doc} ──▶ pushed(doc): check_trust (``limen.auth.trust_signature``:
      this cluster, signed by an ``auth`` certificate of the TLS CA trusted now, at most
      ``max_push_age`` s old), newer than the last document accepted (an older one with
      another revision is a replay: refused), then applied as a polled answer; a keepalive
      of the current revision makes the answer fresh again; one of another revision means
      this node missed a change: it asks auth at once
      ✗ refused ─▶ logged, ``on_refused`` (the node audits it); the last good answer stays

While pushes keep arriving (one accepted within ``push_grace`` s, 45) the node does not poll
auth; before the first one (an older proxy) and when they stop, it polls every ``interval`` s
as before.

It offers what :class:`~limen.trust.cache.TrustCache` offers in the auth process (the
:class:`~limen.trust.cache.TrustView` protocol): ``roots``, ``user_cas()``, ``role_names()``,
``wait_changed()``, plus :meth:`RemoteTrustCache.ssh_user_trust`, the node's
``cluster -> user CA keys`` map, and this cluster's own CA keys and rotation phases
(:attr:`RemoteTrustCache.own_user_keys`, :attr:`~RemoteTrustCache.own_host_keys`,
:attr:`~RemoteTrustCache.host_signer`, :attr:`~RemoteTrustCache.host_phase`) that
``limen.agents.host_cert_renewal`` follows during a CA rotation. Deny by default: before the
first answer no root is trusted;
a malformed root (a private key, a CA of the wrong cluster or type, a bad role_map, this
cluster's own name) is ignored and logged. A daemon service; called by
``limen.cli.compose_remote``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from limen.aio.changed import Changed
from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.auth.http.trust_leaf import TRUST_ROOTS_PATH
from limen.auth.trust_signature import check_trust
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey, load_public_key
from limen.diag.metrics import Metrics
from limen.errors import AccessDenied, BadParameter, LimenError
from limen.trust.cache import TrustedRoot
from limen.trust.rolemap import compile_role_map, map_roles

__all__ = ["RemoteTrustCache", "parse_root"]

log = logging.getLogger(__name__)


def _ca(doc: Any, cluster: str, ca_type: CertAuthorityType) -> CertAuthority:
    if not isinstance(doc, Mapping):
        raise BadParameter(f"the {ca_type.value} CA of {cluster} is not an object")
    pairs = [doc.get("active"), *(doc.get("additional_trusted") or [])]
    if any(isinstance(p, Mapping) and "private_key" in p for p in pairs):
        raise BadParameter(f"the {ca_type.value} CA of {cluster} carries a private key")
    ca = CertAuthority.from_dict(doc)
    if ca.cluster != cluster or ca.type is not ca_type:
        raise BadParameter(f"a {ca.type.value} CA of {ca.cluster!r} was sent as the "
                           f"{ca_type.value} CA of {cluster!r}")
    return ca.public_only()


def parse_root(doc: Any, local_cluster: str) -> TrustedRoot:
    """One entry of ``roots`` checked and compiled; :class:`BadParameter` when unusable."""
    if not isinstance(doc, Mapping):
        raise BadParameter("a trusted root must be an object")
    name = doc.get("root_cluster")
    if not isinstance(name, str) or not name:
        raise BadParameter("a trusted root needs root_cluster")
    if name == local_cluster:
        raise BadParameter(f"{name!r} is this cluster's own name")
    cas = doc.get("cas")
    if not isinstance(cas, Mapping) or "user" not in cas:
        raise BadParameter(f"the trusted root {name} has no user CA")
    optional = {t: _ca(cas[t.value], name, t) for t in (CertAuthorityType.HOST,
                                                        CertAuthorityType.TLS)
                if cas.get(t.value) is not None}
    role_map = doc.get("role_map") or []
    if not isinstance(role_map, list):
        raise BadParameter(f"the role_map of {name} must be a list")
    return TrustedRoot(
        str(doc.get("trusted_cluster") or name), name, _ca(cas["user"], name,
                                                           CertAuthorityType.USER),
        compile_role_map(role_map), host_ca=optional.get(CertAuthorityType.HOST),
        tls_ca=optional.get(CertAuthorityType.TLS),
        proxy_address=str(doc.get("proxy_address") or ""),
        tunnel_address=str(doc.get("tunnel_address") or ""))


class RemoteTrustCache(TaskService):
    """See the module doc. ``client()`` returns the caller's auth client (it may wait for the
    route to auth); ``user_ca_keys`` and ``host_ca_keys`` are this cluster's CA keys known at
    join; ``tls_ca_pem`` its TLS CA certificates known at join (they verify a pushed answer's
    signer until auth's answer names the CA); ``on_refused(reason, proxy)`` hears of each
    pushed answer refused; ``metrics`` counts the answers (``limen_trust_answers_total``)."""

    name = "trust"
    task_name = "trust-poll"

    def __init__(self, client: Callable[[], Awaitable[AuthClient]], local_cluster: str,
                 user_ca_keys: Sequence[str], host_ca_keys: Sequence[str] = (), *,
                 interval: float = 3.0,
                 max_stale: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 tls_ca_pem: bytes = b"", push_grace: float = 45.0,
                 max_push_age: float = 120.0, wall_clock: Callable[[], float] = time.time,
                 on_refused: Callable[[str, str], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.client = client
        self.metrics = metrics
        self.push_grace = push_grace
        self.max_push_age = max_push_age
        self.wall_clock = wall_clock
        self.on_refused = on_refused
        self._tls_cas: tuple[x509.Certificate, ...] = (
            tuple(x509.load_pem_x509_certificates(tls_ca_pem)) if tls_ca_pem else ())
        self._issued_at = 0
        """``issued_at`` (auth's ms) of the last signed answer accepted: older ones with
        another revision are replays."""
        self._floor = 0
        """When (ms, this node's clock) a poll last changed the answer: a pushed answer of
        another revision signed before it is a replay too."""
        self._pushed_at: float | None = None
        """When a pushed answer was last accepted (clock)."""
        self._poll_now = asyncio.Event()

        self.local_cluster = local_cluster
        self.interval = interval
        self.max_stale = max_stale
        self.clock = clock
        self._own: tuple[PublicKey, ...] = tuple(load_public_key(k) for k in user_ca_keys)
        self.own_user_keys: tuple[str, ...] = tuple(user_ca_keys)
        """This cluster's user CA keys (OpenSSH lines), as auth last said."""
        self.own_host_keys: tuple[str, ...] = tuple(host_ca_keys)
        """This cluster's host CA keys (OpenSSH lines), the signing key first."""
        self.host_signer = ""
        """The OpenSSH line of the host CA's signing key ("": auth has not said yet)."""
        self.host_phase = "standby"
        """The host CA's rotation phase (``limen.auth.rotation.Phase`` value)."""
        self._rotation: Mapping[str, Any] = {}
        self._roots: dict[str, TrustedRoot] = {}
        self._revision = ""
        self._fresh_at: float | None = None
        """When auth last answered (clock); None: never, or the roots were dropped as stale."""
        self._changed = Changed()

    def rotation_mark(self, ca_type: str) -> str:
        """The rotation phase of this cluster's CA of ``ca_type`` and when it began, as auth
        last said: changes whenever its signing key may have (the db agent's upstream
        certificates, ``limen.agents.db.upstream_tls``)."""
        state = self._rotation.get(ca_type)
        if not isinstance(state, Mapping):
            return ""
        return f"{state.get('phase', '')}@{state.get('phase_started', '')}"

    # ------------------------------------------------------------------ TrustView

    def _current(self) -> dict[str, TrustedRoot]:
        """The roots, or none once auth's last answer is older than ``max_stale``."""
        if self._fresh_at is None or self.clock() - self._fresh_at > self.max_stale:
            return {}
        return self._roots

    @property
    def roots(self) -> Mapping[str, TrustedRoot]:
        return dict(self._current())

    def user_cas(self) -> list[CertAuthority]:
        """The trusted roots' user CAs (public)."""
        return [root.user_ca for root in self._current().values()]

    def role_names(self, identity: Identity) -> list[str]:
        """Local roles of ``identity`` of a trusted root; nothing for any other cluster."""
        root = self._current().get(identity.cluster)
        if root is None or identity.cluster == self.local_cluster:
            return []
        return map_roles(identity.roles, root.role_map)

    def wait_changed(self, within: float | None = None) -> Coroutine[Any, Any, bool]:
        """Wait for the next change of the roots (True) or ``within`` seconds (False); the
        change counted is the first one after this call (not after the first await)."""
        return self._changed.wait(within)

    def ssh_user_trust(self) -> Mapping[str, Sequence[PublicKey]]:
        """``cluster -> user CA keys``: this cluster's own and every trusted root's."""
        trust: dict[str, Sequence[PublicKey]] = {self.local_cluster: self._own}
        for name, root in self._current().items():
            trust[name] = root.user_ca.trusted_public_keys()
        return trust

    # ------------------------------------------------------------------ polling

    def push_current(self) -> bool:
        """True while pushed answers arrive (one accepted within ``push_grace``)."""
        return self._pushed_at is not None and self.clock() - self._pushed_at <= self.push_grace

    async def _run(self) -> None:
        while True:
            if not self.push_current():
                await self.refresh()
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._poll_now.wait()

    def pushed(self, doc: Mapping[str, Any], proxy: str = "") -> bool:
        """A signed answer a proxy pushed (see the module doc); True when accepted."""
        now = datetime.fromtimestamp(self.wall_clock(), UTC)
        try:
            checked = check_trust(doc, self.local_cluster, self._tls_cas, now,
                                  self.max_push_age)
        except (AccessDenied, BadParameter) as err:
            self._refuse(str(err), proxy)
            return False
        if checked.issued_at <= self._issued_at and checked.revision == self._revision:
            self._count("push", "ignored")  # an older copy of the current answer (another
            return False                    # proxy's)
        if checked.issued_at <= max(self._issued_at, self._floor) \
                and checked.revision != self._revision:
            self._refuse(f"an answer of revision {checked.revision[:12]} signed before the "
                         "one this node holds (a replay)", proxy)
            return False
        if checked.answer is None and checked.revision != self._revision:
            self._count("push", "ignored")
            log.info("trusted roots: proxy %s is at revision %s, this node is not: asking auth",
                     proxy, checked.revision[:12])
            self._pushed_at = None
            self._poll_now.set()
            return False
        if checked.answer is not None and checked.revision != self._revision:
            self._apply(checked.answer)
            log.info("trusted roots: revision %s (%d root(s)) pushed by proxy %s, signed by %s",
                     checked.revision[:12], len(self._roots), proxy or "?", checked.signer)
        self._issued_at = checked.issued_at
        self._fresh_at = self._pushed_at = self.clock()
        self._count("push", "accepted")
        return True

    def _count(self, source: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.trust_answers.labels(source, outcome).inc()

    def _refuse(self, reason: str, proxy: str) -> None:
        self._count("push", "refused")
        log.warning("trusted roots: refused the trust answer pushed by proxy %s: %s; keeping "
                    "the last good one", proxy or "?", reason)
        if self.on_refused is not None:
            self.on_refused(reason, proxy)

    async def refresh(self) -> bool:
        """Ask auth once; True when it answered. On failure, expire a stale state."""
        try:
            client = await self.client()
            answer = await client.call("GET", TRUST_ROOTS_PATH,
                                       params={"revision": self._revision} if self._revision
                                       else None)
            if not isinstance(answer, dict) or answer.get("cluster") != self.local_cluster:
                raise BadParameter("auth's trust answer names another cluster")
        except asyncio.CancelledError:
            raise
        except (LimenError, OSError) as err:
            self._count("poll", "failed")
            self._failed(str(err))
            return False
        self._count("poll", "answered")
        if not answer.get("unchanged"):
            changed = str(answer.get("revision") or "") != self._revision
            if changed:  # pushed answers signed before this one are replays from now on
                self._floor = int(self.wall_clock() * 1000)
            self._apply(answer)
            if changed:
                log.info("trusted roots: revision %s (%d root(s)) from auth",
                         self._revision[:12], len(self._roots))
        self._fresh_at = self.clock()
        return True

    def _failed(self, reason: str) -> None:
        if self._fresh_at is None:
            log.warning("trusted roots: cannot ask auth (%s)", reason)
            return
        stale_for = self.clock() - self._fresh_at
        if stale_for <= self.max_stale:
            log.warning("trusted roots: cannot ask auth (%s); keeping the last answer", reason)
            return
        log.warning("trusted roots: no answer from auth for %.0f s (%s): trusting no root "
                    "cluster until it answers", stale_for, reason)
        self._fresh_at, self._revision = None, ""
        self._set({})

    def _apply(self, answer: Mapping[str, Any]) -> None:
        try:
            own = _ca(answer.get("user_ca"), self.local_cluster, CertAuthorityType.USER)
            self._own = own.trusted_public_keys()
            self.own_user_keys = own.ssh_public_keys()
        except BadParameter as err:
            log.warning("trusted roots: keeping this cluster's user CA keys: %s", err)
        if answer.get("host_ca") is not None:
            try:
                host = _ca(answer.get("host_ca"), self.local_cluster, CertAuthorityType.HOST)
                self.own_host_keys = host.ssh_public_keys()
                self.host_signer = host.active.ssh_public_key
            except BadParameter as err:
                log.warning("trusted roots: keeping this cluster's host CA keys: %s", err)
        if answer.get("tls_ca") is not None:
            try:
                tls = _ca(answer.get("tls_ca"), self.local_cluster, CertAuthorityType.TLS)
                self._tls_cas = tls.trusted_certificates() or self._tls_cas
            except BadParameter as err:
                log.warning("trusted roots: keeping this cluster's TLS CA: %s", err)
        rotation = answer.get("rotation")
        self._rotation = rotation if isinstance(rotation, Mapping) else {}
        host_state = rotation.get("host") if isinstance(rotation, Mapping) else None
        if isinstance(host_state, Mapping):
            self.host_phase = str(host_state.get("phase") or "standby")
        roots: dict[str, TrustedRoot] = {}
        raw = answer.get("roots")
        for doc in raw if isinstance(raw, list) else []:
            try:
                root = parse_root(doc, self.local_cluster)
            except BadParameter as err:
                log.warning("trusted roots: ignoring a root: %s", err)
                continue
            roots[root.root_cluster] = root
        self._revision = str(answer.get("revision") or "")
        self._set(roots)

    def _set(self, roots: dict[str, TrustedRoot]) -> None:
        self._roots = roots
        self._changed.notify()
