"""The auth server's logic: one object that every auth API handler calls.

``AuthServer`` owns the cluster's CAs, local users' secrets, join tokens and resources, and
emits an audit event for every security-relevant action (success and failure). It does no
HTTP: ``limen.auth.http.app`` maps requests to these methods, and
``limen.auth.auth_service`` runs it.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.loader import SourceDocument
from limen.api.resources import PUBLIC_KINDS, Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.access_requests import AccessRequests
from limen.auth.authorities import Authorities
from limen.auth.ca_sealing import CASealer
from limen.auth.changes import change_event_type
from limen.auth.credentials.local_users import LocalUsers, SignupResult
from limen.auth.credentials.otp import provisioning_uri
from limen.auth.credentials.signup_tokens import build_signup_url
from limen.auth.credentials.webauthn import RelyingParty, relying_party
from limen.auth.grants import GrantCache
from limen.auth.host_certs import HostCerts
from limen.auth.host_join import JoinRequest, join_host
from limen.auth.host_names import HostNames, local_host_names
from limen.auth.issuer import IssuedCerts, issue_user_certs, user_traits
from limen.auth.role_reader import RoleReader
from limen.auth.rotation import ROTATABLE
from limen.auth.store_keys import CLUSTER_NAME_KEY, PROXY_ADDRESS_KEY
from limen.auth.tokens import JoinTokens, is_single_use
from limen.backend.base import Backend, Condition
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import load_public_key
from limen.ca.ssh_certs import sign_host_cert
from limen.ca.x509_certs import sign_client_cert, sign_server_cert
from limen.config import ClusterSettings
from limen.errors import AlreadyExists, BadParameter, LimenError, NotFound
from limen.events.emitter import Emitter
from limen.events.event import AuditEvent, make_event
from limen.rbac.checker import AccessChecker, describe
from limen.rbac.roleset import RoleSet
from limen.services.admin import AdminOps
from limen.services.apply import apply_plan
from limen.services.audit_in_transaction import AuditOutbox, OutboxRecords, outbox_records
from limen.services.locks import Locked, LockView, StoreLockFeed
from limen.services.plan import Action, Plan
from limen.services.resource_store import ResourceStore

__all__ = ["AuthServer", "HostCerts", "LoginResult"]

log = logging.getLogger(__name__)

HOST_CERT_TTL = timedelta(days=30)


@dataclass(frozen=True)
class LoginResult:
    certs: IssuedCerts
    cluster: str
    tls_cas: dict[str, str]
    """cluster -> PEM of the TLS CAs the client should trust for the proxy."""
    known_hosts: list[str]
    """``@cert-authority`` lines for the host CAs."""


class AuthServer:
    def __init__(
        self,
        backend: Backend,
        cluster: ClusterSettings,
        emitter: Emitter,
        *,
        clock: Callable[[], float] = time.time,
        ca_sealer: CASealer | None = None,
    ) -> None:
        self.backend = backend
        self.ca_sealer = ca_sealer
        """Encrypts the CAs' private records (``backend.ca_key_file``); None: plain."""
        self.settings = cluster
        self.cluster_name = cluster.name
        """Settled by ``start()``: the name stored at the first start wins over the setting."""
        self.store = ResourceStore(backend)
        self.static_proxy_token = ""
        """A reusable token proxies join with (``auth.proxy_token_file``; Kubernetes)."""
        self.static_db_token = ""
        """A reusable token db agents join with (``auth.db_token_file``; Kubernetes)."""
        self.static_kube_token = ""
        """A reusable token kube agents join with (``auth.kube_token_file``; Kubernetes)."""
        self.proxy_names: tuple[str, ...] = ()
        """What a joining proxy's certificates name besides its id (configuration:
        ``limen.auth.host_names.configured_proxy_names``)."""
        self.admin = AdminOps(self.store)
        self.authorities = Authorities(backend, self.store, cluster.name, ca_sealer)
        self.users = LocalUsers(backend, clock)
        self.tokens = JoinTokens(self.store)
        self.role_reader = RoleReader(backend)
        """Roles as issuance reads them: from the backend every time, decoded once per
        content (``limen.auth.role_reader``)."""
        self.grants = GrantCache()
        """What roles give a certificate, per stored roles and traits (``limen.auth.grants``)."""
        self.access_requests = AccessRequests(self)
        self.locks = LockView(max_staleness=None)
        """The locks in force (``limen.services.locks``), kept by :attr:`lock_feed`."""
        self.lock_feed = StoreLockFeed(self.store, self.locks)
        """Started by ``limen.auth.auth_service`` (a full load before the API serves)."""
        self.emitter = emitter
        self.outbox = AuditOutbox(backend, emitter)
        """A change's audit events, committed with it and then delivered (see apply)."""
        self.clock = clock
        self.secret_resolver: Callable[[Any], str] | None = None
        """Reads what a document's ``*_secret_ref`` names (an OIDC connector's client secret):
        set by ``limen.cli.compose`` to the configured secrets places; None reads nothing."""
        self.initialized = False
        """False until ``start()`` has the cluster's name and CAs."""

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def start(self, *, initialize: bool = True) -> None:
        """Settle the cluster name (the first start records it) and load or create the CAs.

        ``initialize=False`` (``lmctl`` on a data directory nothing runs from) only loads what
        exists: a directory bootstrapped offline keeps its name and CAs for ``limen start``.
        """
        item = await self.backend.get(CLUSTER_NAME_KEY)
        if item is None and not initialize:
            self.initialized = False
            return
        try:
            await self.backend.create(CLUSTER_NAME_KEY, self.settings.name.encode())
        except AlreadyExists:
            item = await self.backend.get(CLUSTER_NAME_KEY)
            assert item is not None
            stored = item.value.decode()
            if stored != self.settings.name and initialize:
                log.warning("cluster name is %r (set at the first start); ignoring %r",
                            stored, self.settings.name)
            self.cluster_name = stored
        self.authorities = Authorities(self.backend, self.store, self.cluster_name,
                                       self.ca_sealer)
        await self.authorities.ensure()
        if initialize:  # events of a change a crash kept from the log: written once, now
            await self.outbox.recover()
        self.initialized = True

    async def emit(self, event_type: str, *, success: bool | None = None,
                   user: str | None = None, **fields: Any) -> None:
        try:
            await self.emitter.emit(make_event(
                event_type, success=success, cluster=self.cluster_name, user=user, **fields))
        except (LimenError, OSError):
            log.exception("cannot write audit event %s", event_type)
            raise

    # -- cluster facts -----------------------------------------------------------------------
    async def set_proxy_address(self, address: str) -> None:
        await self.backend.put(PROXY_ADDRESS_KEY, address.encode())

    async def proxy_address(self) -> str:
        item = await self.backend.get(PROXY_ADDRESS_KEY)
        if item is None:
            raise NotFound("no proxy has registered its public address yet")
        return item.value.decode()

    def tls_ca_pin(self) -> str:
        return self.authorities.get(CertAuthorityType.TLS).fingerprint

    def known_hosts_lines(self) -> list[str]:
        host_ca = self.authorities.get(CertAuthorityType.HOST)
        return [f"@cert-authority * {key}" for key in host_ca.ssh_public_keys()]

    def export_ca(self, ca_type: CertAuthorityType) -> dict[str, Any]:
        """Public parts of one of this cluster's CAs (``lmctl auth export``)."""
        ca = self.authorities.get(ca_type).public_only()
        return {"cluster": ca.cluster, "type": ca.type.value, "fingerprint": ca.fingerprint,
                "ssh_public_keys": list(ca.ssh_public_keys()) if ca.type.is_ssh else [],
                "pem": ca.pem_bundle()}

    def status(self) -> dict[str, Any]:
        if not self.initialized:
            return {"cluster": None, "ca_fingerprints": {},
                    "second_factor": self.settings.second_factor}
        fingerprints = {t.value: self.authorities.get(t).fingerprint for t in CertAuthorityType}
        rotation = {t.value: self.authorities.rotation(t).to_dict() for t in ROTATABLE}
        return {"cluster": self.cluster_name, "ca_fingerprints": fingerprints,
                "ca_rotation": rotation, "second_factor": self.settings.second_factor}

    # -- users -------------------------------------------------------------------------------
    async def _user(self, name: str) -> Resource:
        return await self.store.get(Kind.USER, name)

    async def add_user(self, name: str, roles: Sequence[str], logins: Sequence[str],
                       *, actor: str, ttl_seconds: float = 3600.0) -> tuple[Resource, str]:
        spec: dict[str, Any] = {"roles": list(roles)}
        if logins:
            spec["traits"] = {"logins": list(logins)}
        document = Resource(Kind.USER, name, spec=spec).to_document()
        user = validate([SourceDocument("<users add>", 0, 1, document)])[0]
        for role in roles:
            await self.store.get(Kind.ROLE, role)
        await self.signup_prerequisites()  # refuse before writing, not after
        created = await self.store.create(user.with_origin(Origin.API))
        await self.emit("user.create", user=actor, name=name, roles=list(roles))
        return created, await self.invite(name, actor=actor, ttl_seconds=ttl_seconds)

    async def invite(self, name: str, *, actor: str, ttl_seconds: float = 3600.0) -> str:
        """A one-time sign-up link for an existing user (from Git, Kubernetes or the API)."""
        await self._user(name)
        proxy, pin = await self.signup_prerequisites()
        secret = await self.users.invite(name, ttl_seconds)
        return build_signup_url(proxy, secret, pin)

    async def signup_prerequisites(self) -> tuple[str, str]:
        """What a sign-up link needs (the proxy's address, the TLS CA pin), asked before
        anything is written so a refusal leaves nothing behind."""
        pin = self.tls_ca_pin()
        return await self.proxy_address(), pin

    async def webauthn_rp(self) -> RelyingParty:
        """The relying party of security keys: the proxy's public host name and origin."""
        return relying_party(
            await self.proxy_address(), self.cluster_name,
            require_user_verification=self.settings.webauthn_user_verification == "required")

    async def signup_begin(self, secret: str, password: str | None,
                           mfa: str = "otp") -> dict[str, Any]:
        """The TOTP enrolment (or with ``mfa`` "webauthn" the security key registration) of a
        sign-up link, to confirm with :meth:`signup` (see ``LocalUsers.signup_begin``); a
        refused link is audited like a refused sign-up."""
        try:
            rp = await self.webauthn_rp() if mfa == "webauthn" else None
            result = await self.users.signup_begin(secret, password, self.settings.second_factor,
                                                   self._user, mfa=mfa, rp=rp)
        except LimenError as err:
            await self.emit("user.signup", success=False, reason=str(err))
            raise
        return self._signup_answer(result)

    async def signup(self, secret: str, password: str, otp_code: str | None = None,
                     webauthn: Mapping[str, Any] | None = None,
                     key_name: str = "key") -> dict[str, Any]:
        """Finish a sign-up with the code of the TOTP enrolment, or with ``webauthn`` (the
        security key's registration answer, the key named ``key_name``)."""
        try:
            key = None if webauthn is None else (await self.webauthn_rp(), webauthn, key_name)
            result = await self.users.signup(secret, password, otp_code,
                                             self.settings.second_factor, self._user,
                                             webauthn=key)
        except LimenError as err:
            await self.emit("user.signup", success=False, reason=str(err),
                            **({"second_factor": "webauthn"} if webauthn is not None else {}))
            raise
        if webauthn is not None:
            await self.emit("user.signup", user=result.user, second_factor="webauthn")
            await self.emit("mfa.add", user=result.user, name=key_name, type="webauthn")
        else:
            await self.emit("user.signup", user=result.user)
        return self._signup_answer(result)

    def _signup_answer(self, result: SignupResult) -> dict[str, Any]:
        uri = (provisioning_uri(result.totp_secret, result.user, self.cluster_name)
               if result.totp_secret else None)
        return {"user": result.user, "second_factor": self.settings.second_factor,
                "totp_secret": result.totp_secret, "totp_uri": uri,
                **({"webauthn": result.webauthn} if result.webauthn else {})}

    async def webauthn_login_begin(self, user: str, password: str, *,
                                   remote_addr: str = "") -> dict[str, Any]:
        """The challenge of a login with a security key, once the password is right; a wrong
        password is audited and counted as a failed login."""
        found = await self.store.find(Kind.USER, user)
        outcome, options = await self.users.webauthn_login_begin(
            user, password, self.settings.second_factor, await self.webauthn_rp(),
            known_user=found is not None)
        if not outcome.ok:
            await self.emit("user.login", success=False, user=user, method="local",
                            second_factor="webauthn", reason=outcome.reason_internal,
                            remote_addr=remote_addr)
            outcome.raise_for_failure()
        if options is None:
            raise NotFound(f"{user} has no security key registered: log in with the "
                           "one-time code")
        return {"webauthn": options}

    async def login(self, user: str, password: str, otp_code: str | None, public_key: str,
                    ttl: timedelta | None, *, remote_addr: str = "",
                    request_id: str | None = None,
                    webauthn: Mapping[str, Any] | None = None) -> LoginResult:
        """A local login: password, and the one-time code or the security key's answer
        (``webauthn``, to the challenge of :meth:`webauthn_login_begin`)."""
        found = await self.store.find(Kind.USER, user)
        factor = _factor_used(self.settings.second_factor, webauthn)
        outcome = await self.users.authenticate(
            user, password, otp_code, self.settings.second_factor, known_user=found is not None,
            webauthn=None if webauthn is None else (await self.webauthn_rp(), webauthn))
        if not outcome.ok:
            await self.emit("user.login", success=False, user=user, method="local",
                            second_factor=factor, reason=outcome.reason_internal,
                            remote_addr=remote_addr)
            locked_until = outcome.creds.locked_until
            if outcome.reason_internal not in ("locked", "unknown_user_locked") and \
                    locked_until and locked_until > self.clock():
                await self.emit("user.locked", user=user, until=locked_until)
            outcome.raise_for_failure()
        assert found is not None
        certs = await self.issue_for_user(found, public_key, ttl, request_id=request_id)
        await self.emit("user.login", user=user, method="local", remote_addr=remote_addr,
                        second_factor=factor, roles=list(certs.identity.roles),
                        ttl_seconds=int(certs.ttl.total_seconds()),
                        **_requests_field(certs.identity))
        return await self.login_result(certs)

    async def login_result(self, certs: IssuedCerts) -> LoginResult:
        """What a login answers: the certificates and the CAs the client should trust."""
        return LoginResult(
            certs=certs, cluster=self.cluster_name,
            tls_cas={c: ca.pem_bundle() for c, ca in
                     (await self.authorities.trusted(CertAuthorityType.TLS)).items()
                     if c == self.cluster_name},
            known_hosts=self.known_hosts_lines(),
        )

    async def issue_for_user(self, user: Resource, public_key: str,
                             ttl: timedelta | None, *, request_id: str | None = None,
                             not_after: datetime | None = None) -> IssuedCerts:
        """``user``'s certificates; with ``request_id``, an approved access request of
        theirs adds its roles and bounds the lifetime by its expiry (and ``not_after``)."""
        stored = await self.role_reader.read(user.spec.get("roles") or [], user=user.name)
        request = None if request_id is None else \
            await self.access_requests.approved_for(user.name, request_id)
        if request is not None:
            held = {r.name for r in stored}
            stored += [r for name in request.roles if name not in held
                       and (r := await self.role_reader.find(name)) is not None]
            not_after = min(request.expires, not_after or request.expires)
        try:
            self.locks.check_names(user.name, [r.name for r in stored])
            certs = issue_user_certs(
                user=user, roles=[r.resource for r in stored], public_key=public_key,
                user_ca=self.authorities.get(CertAuthorityType.USER),
                tls_ca=self.authorities.get(CertAuthorityType.TLS),
                requested_ttl=ttl, now=self.now(),
                access_requests=(request.id,) if request else (), not_after=not_after,
                grant=self.grants.grant(stored, user_traits(user)),
            )
        except LimenError as err:
            await self.emit("cert.create", success=False, user=user.name, reason=str(err),
                            **(err.lock.to_fields() if isinstance(err, Locked) else {}))
            if request is not None:
                await self.emit("access_request.use", success=False, user=user.name,
                                request_id=request.id, reason=str(err))
            raise
        await self.emit("cert.create", user=user.name, cert_type="user",
                        logins=list(certs.identity.logins),
                        expires=certs.expires.isoformat(), **_requests_field(certs.identity))
        if request is not None:
            await self.access_requests.used(request, certs.expires)
        return certs

    async def roles_of(self, user: Resource) -> list[Resource]:
        """``user``'s roles as stored now (a missing one is logged and left out)."""
        return [r.resource for r in
                await self.role_reader.read(user.spec.get("roles") or [], user=user.name)]

    async def role_set(self, identity: Identity) -> RoleSet:
        """The identity's roles; :class:`~limen.services.locks.Locked` (audited) when a lock
        targets the user or one of the roles."""
        lock = self.locks.is_locked(identity)
        if lock is not None:
            await self.emit("access.denied", user=identity.username, reason=lock.refusal(),
                            **lock.to_fields())
            raise Locked(lock)
        roles = [r for name in identity.roles
                 if (r := await self.role_reader.find(name)) is not None]
        return self.grants.role_set(roles, identity.traits)

    # -- tokens and joining ---------------------------------------------------------------
    async def create_token(self, token_type: str, ttl: timedelta, *, actor: str,
                           labels: Mapping[str, str] | None = None,
                           single_use: bool | None = None) -> tuple[str, Resource]:
        self.tls_ca_pin()  # a cluster that has no CA yet cannot be joined: refuse before writing
        secret, record = await self.tokens.create(
            token_type, ttl, now=self.now(), labels=labels, single_use=single_use)
        await self.emit("join_token.create", user=actor, token_id=record.name,
                        token_type=token_type, expires=record.spec["expires"])
        return secret, record

    async def token_answer(self, secret: str, record: Resource) -> dict[str, Any]:
        """What ``lmctl tokens add`` shows: the secret once, its pin, and where to join."""
        answer = {"token": secret, "id": record.name, "type": record.spec["type"],
                  "expires": record.spec["expires"], "single_use": is_single_use(record),
                  "ca_pin": self.tls_ca_pin()}
        with contextlib.suppress(NotFound):
            answer["proxy"] = await self.proxy_address()
        return answer

    async def join(self, token: str, role: str, host_id: str, hostname: str, public_key: str,
                   addresses: Sequence[str], *, remote_addr: str = "",
                   ssh_public_key: str = "", proof: Mapping[str, Any] | None = None,
                   ) -> HostCerts:
        """A joining host's certificates: the token used up with the host id's registration,
        names decided here (``addresses`` are ignored), a taken host id only with ``proof``
        (see ``limen.auth.host_join``). Audited either way."""
        return await join_host(self, JoinRequest(
            token=token, role=role, host_id=host_id, hostname=hostname, public_key=public_key,
            addresses=tuple(addresses), ssh_public_key=ssh_public_key, proof=proof),
            remote_addr=remote_addr)

    def is_static_proxy_token(self, token: str) -> bool:
        return self.is_static_token(SystemRole.PROXY, token)

    def is_static_token(self, role: SystemRole, token: str) -> bool:
        """Is ``token`` the configured static token of ``role`` (proxy, db or kube)?"""
        static = {SystemRole.PROXY: self.static_proxy_token,
                  SystemRole.DB: self.static_db_token,
                  SystemRole.KUBE: self.static_kube_token}.get(role, "")
        return bool(static) and hmac.compare_digest(token.encode(), static.encode())

    def issue_host_certs(self, host_id: str, hostname: str, role: SystemRole,
                         public_key: str, addresses: Sequence[str], *,
                         ssh_public_key: str = "", names: HostNames | None = None) -> HostCerts:
        """TLS and SSH host certificates of ``public_key``; the SSH one certifies
        ``ssh_public_key`` instead when given (the proxy's Ed25519 SSH key). ``names``: what
        they name (a join: ``limen.auth.host_names``); without, ``addresses`` from the
        configuration of a component in auth's own process, with ``localhost``."""
        if names is None:
            names = local_host_names(host_id, hostname, addresses)
        key = load_public_key(public_key)
        ssh_key = load_public_key(ssh_public_key) if ssh_public_key else key
        host_ca = self.authorities.get(CertAuthorityType.HOST)
        tls_ca = self.authorities.get(CertAuthorityType.TLS)
        user_ca = self.authorities.get(CertAuthorityType.USER)
        identity = Identity.for_host(self.cluster_name, host_id, hostname, role)
        ssh_cert = sign_host_cert(host_ca, ssh_key, host_id, hostname, names.principals,
                                  HOST_CERT_TTL, role, now=self.now())
        tls = sign_server_cert(tls_ca, key, names.dns, names.ips,
                               HOST_CERT_TTL, identity, now=self.now())
        return HostCerts(identity, ssh_cert, tls.public_bytes(Encoding.PEM),
                         list(user_ca.ssh_public_keys()), list(host_ca.ssh_public_keys()),
                         tls_ca.pem_bundle())

    def issue_admin_cert(self, public_key: str, ttl: timedelta) -> bytes:
        identity = Identity(username="admin", cluster=self.cluster_name,
                            system_role=SystemRole.ADMIN)
        cert = sign_client_cert(self.authorities.get(CertAuthorityType.TLS),
                                load_public_key(public_key), identity, ttl, now=self.now())
        return cert.public_bytes(Encoding.PEM)

    # -- resources ---------------------------------------------------------------------------
    async def apply(self, resources: Sequence[Resource], origin: Origin, *, actor: str,
                    prune: bool = False, kinds: Sequence[Kind] | None = None,
                    before_write: Callable[[Plan], Sequence[AuditEvent]] | None = None,
                    fence: Sequence[Condition] = (),
                    ) -> Plan:
        """Plan and apply all or nothing. The per-object audit events are committed in the
        same store transaction (outbox records), then written to the audit log: a crash
        after the commit delays them to the next start, never loses them.
        ``before_write`` sees the plan before anything is written: it may refuse it (raise)
        and returns more events to commit with it (the Git sync's ``gitops.sync``).
        ``fence``: conditions the transaction also checks (the Git sync's leader lease)."""
        plan = await self.admin.plan(resources, origin, prune=prune, kinds=kinds)
        events = []
        for entry in plan.changes:
            event_type = change_event_type(entry.kind, entry.action)
            if event_type:
                events.append(make_event(event_type, cluster=self.cluster_name, user=actor,
                                         name=entry.name, origin=origin.value,
                                         kind=entry.kind.value))
        if before_write is not None:
            events.extend(before_write(plan))
        records = outbox_records(events)
        revision = await apply_plan(self.store, plan, records, fence)
        self._note_locks(plan, revision)
        for entry in plan.changes:
            if entry.kind is Kind.USER and entry.desired is None:
                await self.users.forget(entry.name)
        await self._emit_all(records)
        return plan

    def _note_locks(self, plan: Plan, revision: int) -> None:
        """Locks this apply created or changed are in force for the very next request, not
        only once the store's watch brings them (``StoreLockFeed`` still follows every write,
        ours and other processes', and lists them all again whenever it restarts)."""
        for entry in plan.changes:
            if entry.kind is Kind.LOCK and entry.desired is not None:
                self.locks.put(entry.desired.replace(revision=revision), revision)

    async def _emit_all(self, records: OutboxRecords) -> None:
        """Deliver a committed change's events together, in order: the audit log writes them
        with one fsync per batch (a 10,000-object Git sync: ~1 s instead of ~14 s of one
        fsync per event), then their outbox records are dropped."""
        try:
            await self.outbox.deliver(records)
        except (LimenError, OSError):
            log.exception("cannot write %d audit events (kept in the store's audit outbox "
                          "until the next start)", len(records.events))
            raise

    async def remove(self, kind: Kind, name: str, origin: Origin, *, actor: str) -> None:
        if kind not in PUBLIC_KINDS:
            raise BadParameter(f"{kind.value} objects cannot be removed this way")
        await self.admin.remove(kind, name, origin)
        event_type = change_event_type(kind, Action.DELETE)
        if event_type:
            await self.emit(event_type, user=actor, name=name, origin=origin.value,
                            kind=kind.value)
        if kind is Kind.USER:
            await self.users.forget(name)

    async def access_check(self, user_name: str, kind: Kind, name: str,
                           login: str | None) -> dict[str, Any]:
        """The decision for ``user_name`` on an object, as ``lmctl access check`` prints it.
        ``login`` is the Unix login for SSH servers and the database user for databases."""
        user = await self._user(user_name)
        return await self.access_check_target(user, await self.store.get(kind, name), login)

    async def access_check_target(self, user: Resource, target: Resource,
                                  login: str | None) -> dict[str, Any]:
        """:meth:`access_check` on a resolved ``target`` (e.g. a heartbeated node)."""
        roles = await self.store.list(Kind.ROLE)
        checker = AccessChecker.for_user(user.name, list(user.spec.get("roles") or []),
                                         user_traits(user), roles)
        decision = checker.explain(target, login=login, db_user=login)
        return {"allowed": decision.allowed, "role": decision.role, "rule": decision.rule,
                "reason": decision.reason, "warnings": list(checker.warnings),
                "text": describe(checker, target, decision, principal=login)}


def _requests_field(identity: Identity) -> dict[str, Any]:
    """The access requests a certificate carries, as an audit event field (none: no field)."""
    return {"access_requests": list(identity.access_requests)} if identity.access_requests \
        else {}


def _factor_used(setting: str, webauthn: object) -> str:
    """The ``second_factor`` field of a login's audit event."""
    if setting == "off":
        return "off"
    return "webauthn" if webauthn is not None else "otp"
