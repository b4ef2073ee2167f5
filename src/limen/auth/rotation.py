"""The CA rotation phase machine: which phase may follow which, and what each does to a CA.

A rotation of one CA type (user, host, db, jwt) moves through phases, as Teleport's::

    standby ──▶ init ──▶ update_clients ──▶ update_servers ──▶ standby
                  │              │                  │
                  └──────────────┴──────────────────┴──▶ rollback ──▶ standby

* ``init``: a new key pair is generated; it is *trusted* (every process adds it; the db CA's
  export, ``lmctl auth export --type db-client``, holds both CA certificates; the JWKS both
  keys) but does not sign. The old key still signs.
* ``update_clients``: the new key signs user certificates (``lmsh login``), host
  certificates asked for, the db agents' upstream client certificates (each agent re-issues
  its cached ones, ``limen.agents.db.upstream_tls``) and app JWTs (with the new key's
  ``kid``); the old one stays trusted, so what was issued before keeps working.
* ``update_servers``: same keys; processes apart from auth fetch a new host certificate
  (``limen.agents.host_cert_renewal``).
* ``standby`` (from ``update_servers``): the old key is dropped (from the trust, the db
  export, the JWKS); what it signed is refused from now on.
* ``rollback`` (from any phase but standby): the old key signs again; the new key stays
  trusted (verify only) so whatever already holds a certificate of it keeps working until
  ``standby``, which drops the new key.

:class:`RotationState` (phase, mode, grace period, when it started, the two keys'
fingerprints) is stored with the CA's public resource (``limen.auth.authorities``), written with
compare-and-swap. In ``auto`` mode :func:`due_phase` says when auth moves on by itself: each of
the three steps after ``init`` (and ``rollback → standby``) after a third of the grace period.
Pure functions, no I/O; called by ``limen.auth.authorities`` and ``limen.auth.rotation_service``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from limen.ca.authority import CAKeyPair, CertAuthority, CertAuthorityType
from limen.ca.keys import key_type_of, spki_pin, ssh_fingerprint
from limen.errors import BadParameter

__all__ = [
    "ALLOWED",
    "KEEP_RETIRED",
    "NOT_ROTATABLE",
    "ROTATABLE",
    "Mode",
    "Phase",
    "RotationRefused",
    "RotationState",
    "advance",
    "check_rotatable",
    "due_phase",
    "key_fingerprint",
]

ROTATABLE = (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.DB,
             CertAuthorityType.JWT)
"""The CA types this rotation covers; all but the TLS CA (see :data:`NOT_ROTATABLE`)."""

NOT_ROTATABLE: Mapping[CertAuthorityType, str] = {
    CertAuthorityType.TLS: (
        "the tls CA is not rotated by phases: every process's joined credentials (its TLS "
        "certificate and the CA it trusts to reach auth) and every lmsh login carry it, and "
        "no process fetches a new one while it runs; a new TLS CA means joining the "
        "processes again"),
}
"""Why a CA type is not in :data:`ROTATABLE` (the refusal ``lmctl auth rotate`` prints)."""


KEEP_RETIRED = 8
"""How many retired keys a CA's rotation state remembers (:attr:`RotationState.retired`)."""


class RotationRefused(BadParameter):
    """A phase change the machine does not allow (or a CA that cannot take it)."""


class Phase(StrEnum):
    STANDBY = "standby"
    INIT = "init"
    UPDATE_CLIENTS = "update_clients"
    UPDATE_SERVERS = "update_servers"
    ROLLBACK = "rollback"


class Mode(StrEnum):
    MANUAL = "manual"
    AUTO = "auto"


ALLOWED: Mapping[Phase, frozenset[Phase]] = {
    Phase.STANDBY: frozenset({Phase.INIT}),
    Phase.INIT: frozenset({Phase.UPDATE_CLIENTS, Phase.ROLLBACK}),
    Phase.UPDATE_CLIENTS: frozenset({Phase.UPDATE_SERVERS, Phase.ROLLBACK}),
    Phase.UPDATE_SERVERS: frozenset({Phase.STANDBY, Phase.ROLLBACK}),
    Phase.ROLLBACK: frozenset({Phase.STANDBY}),
}
"""Phase → the phases that may follow it."""

_NEXT: Mapping[Phase, Phase] = {
    Phase.INIT: Phase.UPDATE_CLIENTS,
    Phase.UPDATE_CLIENTS: Phase.UPDATE_SERVERS,
    Phase.UPDATE_SERVERS: Phase.STANDBY,
    Phase.ROLLBACK: Phase.STANDBY,
}


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise BadParameter(f"rotation time {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RotationState:
    """The rotation of one CA (see the module doc); the default is a CA at rest."""

    phase: Phase = Phase.STANDBY
    mode: Mode = Mode.MANUAL
    grace_period: timedelta = timedelta(0)
    started: datetime | None = None
    """When the rotation began (``init``)."""
    phase_started: datetime | None = None
    old_key: str = ""
    """Fingerprint of the key that signed before the rotation."""
    new_key: str = ""
    """Fingerprint of the key the rotation introduces."""
    retired: tuple[str, ...] = ()
    """The public keys (OpenSSH lines) earlier rotations dropped at ``standby``, the last
    :data:`KEEP_RETIRED`: trusted for nothing, kept so that what they signed in the past can
    still be checked (the jwt CA's audit checkpoints, ``limen.auth.audit_signer``)."""
    request: str = ""
    """The id of the request on the Cluster document (``spec.rotation``) that started this
    rotation, kept after standby ("" when a command started it)."""
    last_request: str = ""
    """The id of the last declared request that started a rotation of this CA, never cleared:
    a request already done is never run again (``limen.auth.rotation_requests``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "mode": self.mode.value,
                "grace_period_seconds": int(self.grace_period.total_seconds()),
                "started": self.started.isoformat() if self.started else "",
                "phase_started": self.phase_started.isoformat() if self.phase_started else "",
                "old_key": self.old_key, "new_key": self.new_key,
                "retired": list(self.retired), "request": self.request,
                "last_request": self.last_request}

    @classmethod
    def from_dict(cls, doc: Any) -> RotationState:
        """Inverse of :meth:`to_dict`; an absent state (None) is standby."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise BadParameter("a CA rotation state must be an object")
        try:
            phase, mode = Phase(str(doc.get("phase"))), Mode(str(doc.get("mode", "manual")))
        except ValueError:
            raise BadParameter(f"unknown rotation phase or mode in {dict(doc)!r}") from None
        grace = doc.get("grace_period_seconds", 0)
        if not isinstance(grace, int) or grace < 0:
            raise BadParameter("grace_period_seconds must be a non-negative integer")
        retired = doc.get("retired") or []
        if not isinstance(retired, list) or not all(isinstance(k, str) for k in retired):
            raise BadParameter("a CA rotation's retired keys must be a list of strings")
        return cls(phase, mode, timedelta(seconds=grace), _time(doc.get("started")),
                   _time(doc.get("phase_started")), str(doc.get("old_key") or ""),
                   str(doc.get("new_key") or ""), tuple(retired),
                   str(doc.get("request") or ""), str(doc.get("last_request") or ""))


def check_rotatable(ca_type: CertAuthorityType) -> None:
    """:class:`RotationRefused` (saying why) unless ``ca_type`` rotates by phases."""
    if ca_type not in ROTATABLE:
        why = NOT_ROTATABLE.get(ca_type, f"the {ca_type.value} CA cannot be rotated by phases")
        raise RotationRefused(f"{why} (rotatable: {', '.join(t.value for t in ROTATABLE)})")


def key_fingerprint(ca_type: CertAuthorityType, pair: CAKeyPair) -> str:
    """``SHA256:...`` of an SSH CA key, the ``sha256:<hex>`` SPKI pin otherwise."""
    return ssh_fingerprint(pair.public_key) if ca_type.is_ssh else spki_pin(pair.public_key)


def _find(ca: CertAuthority, fingerprint: str) -> CAKeyPair:
    for pair in ca.key_pairs:
        if key_fingerprint(ca.type, pair) == fingerprint:
            return pair
    raise RotationRefused(f"the {ca.type.value} CA of {ca.cluster} no longer holds key "
                          f"{fingerprint}: its rotation state does not match its keys")


def _without(ca: CertAuthority, *fingerprints: str) -> tuple[CAKeyPair, ...]:
    return tuple(p for p in ca.additional_trusted
                 if key_fingerprint(ca.type, p) not in fingerprints)


def advance(ca: CertAuthority, state: RotationState, target: Phase, *, now: datetime,
            mode: Mode | None = None, grace_period: timedelta | None = None,
            request: str = "") -> tuple[CertAuthority, RotationState]:
    """``ca`` (with private keys) and its state moved to ``target``; :class:`RotationRefused`
    when ``target`` may not follow the current phase. ``mode``, ``grace_period`` and
    ``request`` (the id of the declared request starting it, "" for a command) are taken when
    a rotation starts (``init``), kept after."""
    check_rotatable(ca.type)
    if target not in ALLOWED[state.phase]:
        allowed = ", ".join(sorted(p.value for p in ALLOWED[state.phase]))
        raise RotationRefused(f"the {ca.type.value} CA is in phase {state.phase.value}: it may "
                              f"go to {allowed}, not {target.value}")
    if not ca.has_private_key:
        raise RotationRefused("cannot rotate a public-only CA copy")
    moved = replace(state, phase=target, phase_started=now)
    if target is Phase.INIT:
        fresh = CertAuthority.generate(ca.cluster, ca.type, key_type_of(ca.active.public_key),
                                       now=now).active
        new_ca = replace(ca, additional_trusted=(fresh, *ca.additional_trusted))
        return new_ca, RotationState(
            Phase.INIT, mode or Mode.MANUAL, grace_period or timedelta(0), now, now,
            key_fingerprint(ca.type, ca.active), key_fingerprint(ca.type, fresh), state.retired,
            request, request or state.last_request)
    old, new = _find(ca, state.old_key), _find(ca, state.new_key)
    if target is Phase.UPDATE_CLIENTS:  # the new key signs; the old one kept (rollback)
        return replace(ca, active=new,
                       additional_trusted=(old, *_without(ca, state.old_key, state.new_key))
                       ), moved
    if target is Phase.UPDATE_SERVERS:
        return ca, moved
    if target is Phase.ROLLBACK:  # the old key signs again; the new one trusted until standby
        return replace(ca, active=old, additional_trusted=(
            new.public_only(), *_without(ca, state.old_key, state.new_key))), moved
    # standby: drop the key the rotation retires (the old one, or the new one after rollback)
    retired = state.new_key if state.phase is Phase.ROLLBACK else state.old_key
    if key_fingerprint(ca.type, ca.active) == retired:
        raise RotationRefused(f"the {ca.type.value} CA still signs with the key to drop")
    dropped = _find(ca, retired).ssh_public_key
    return replace(ca, additional_trusted=_without(ca, retired)), RotationState(
        Phase.STANDBY, state.mode, state.grace_period, None, now,
        retired=(*state.retired, dropped)[-KEEP_RETIRED:], request=state.request,
        last_request=state.last_request)


def due_phase(state: RotationState, now: datetime) -> Phase | None:
    """In ``auto`` mode, the phase auth moves to by itself now (None: none yet)."""
    if state.mode is not Mode.AUTO or state.phase not in _NEXT or state.phase_started is None:
        return None
    if now - state.phase_started >= state.grace_period / 3:
        return _NEXT[state.phase]
    return None
