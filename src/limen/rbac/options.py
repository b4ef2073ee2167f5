"""Role options (``spec.options``): parsing per role and merging across a user's roles.

Each role's options are parsed into :class:`RoleOptions` (``None`` = not set). A user holds
several roles; :func:`merge_options` combines them into the :class:`SessionOptions` that the
CA (certificate TTL, extensions) and the proxy / node agent (forwarding, recording, idle
timeout, locks) enforce. Every merge rule follows Teleport's ``lib/services/role.go``; the
function each rule comes from is named next to it.

Called by :mod:`limen.rbac.role` (parsing) and :class:`limen.rbac.roleset.RoleSet`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from limen.api.durations import parse_duration
from limen.errors import BadParameter

__all__ = [
    "DEFAULT_MAX_SESSION_TTL",
    "LOCK_MODES",
    "RECORDING_MODES",
    "RoleOptions",
    "SessionOptions",
    "merge_options",
    "parse_role_options",
]

DEFAULT_MAX_SESSION_TTL = timedelta(hours=30)
"""Teleport's ``defaults.MaxCertDuration``: the TTL of a role that sets none."""

RECORDING_MODES = ("strict", "best_effort", "off")
LOCK_MODES = ("strict", "best_effort")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_MFA_ON = {"hardware_key", "hardware_key_touch", "session", "session_and_hardware_key"}


@dataclass(frozen=True)
class RoleOptions:
    """One role's ``spec.options``; ``None`` means the role does not set the option."""

    max_session_ttl: timedelta | None = None
    forward_agent: bool | None = None
    port_forwarding: bool | None = None
    ssh_file_copy: bool | None = None
    client_idle_timeout: timedelta | None = None
    disconnect_expired_cert: bool | None = None
    require_session_mfa: bool | None = None
    record_session_default: str | None = None
    record_session_ssh: str | None = None
    lock: str | None = None
    max_sessions: int | None = None
    max_connections: int | None = None
    create_db_user: bool | None = None
    """Create the database user of the Limen user's name on databases with an
    ``admin_user`` (see :func:`limen.rbac.db_auto_users.db_auto_user`)."""


@dataclass(frozen=True)
class SessionOptions:
    """The options in force for a user, merged over all of their roles."""

    max_session_ttl: timedelta
    """Longest certificate / session lifetime: the shortest of the roles' (30h when unset)."""
    forward_agent: bool
    """SSH agent forwarding: allowed when any role allows it."""
    port_forwarding: bool
    """SSH port forwarding: any explicit allow wins, else any explicit deny, else allowed."""
    ssh_file_copy: bool
    """scp/sftp: allowed unless a role disables it."""
    client_idle_timeout: timedelta | None
    """Disconnect idle clients after this long: the shortest non-zero value; None = never."""
    disconnect_expired_cert: bool
    """Cut sessions when the certificate expires: when any role asks for it."""
    require_session_mfa: bool
    """Any role requires per-session MFA (the per-resource answer is in each Decision)."""
    record_session: str
    """SSH session recording mode: ``strict``, ``best_effort`` or ``off``."""
    lock: str | None
    """Locking mode: ``strict`` when any role says so, else ``best_effort`` if set, else the
    cluster default (None)."""
    max_sessions: int | None
    """Concurrent sessions per connection: the smallest non-zero limit; None = unlimited."""
    max_connections: int | None
    """Concurrent connections: the smallest non-zero limit; None = unlimited."""


def _bool(raw: Mapping[str, Any], key: str) -> bool | None:
    value = raw.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:  # Teleport's ParseBool
        return value.lower() in _TRUE
    raise BadParameter(f"options.{key} must be true or false, not {value!r}")


def _duration(raw: Mapping[str, Any], key: str) -> timedelta | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("never", "0", "0s"):
        return timedelta(0)  # Teleport's Duration accepts "never" (and 0) for "no limit"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise BadParameter(f"options.{key} must be a duration like 8h or 30m, not {value!r}")
    duration = parse_duration(value)
    if duration < timedelta(0):
        raise BadParameter(f"options.{key} must not be negative")
    return duration


def _count(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadParameter(f"options.{key} must be a non-negative integer, not {value!r}")
    return value


def _choice(value: Any, key: str, allowed: Sequence[str]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadParameter(f"options.{key} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _mfa(raw: Mapping[str, Any]) -> bool | None:
    value = raw.get("require_session_mfa")
    if isinstance(value, str) and value.lower() in _MFA_ON:
        return True  # Teleport's RequireMFAType: hardware-key variants also mean "required"
    return _bool(raw, "require_session_mfa")


def parse_role_options(raw: Any) -> RoleOptions:
    """Parse ``spec.options``; raises BadParameter on a malformed value."""
    if raw is None:
        return RoleOptions()
    if not isinstance(raw, Mapping):
        raise BadParameter("options must be a map")
    record = raw.get("record_session") or {}
    if not isinstance(record, Mapping):
        raise BadParameter("options.record_session must be a map like {default: strict}")
    return RoleOptions(
        max_session_ttl=_duration(raw, "max_session_ttl"),
        forward_agent=_bool(raw, "forward_agent"),
        port_forwarding=_bool(raw, "port_forwarding"),
        ssh_file_copy=_bool(raw, "ssh_file_copy"),
        client_idle_timeout=_duration(raw, "client_idle_timeout"),
        disconnect_expired_cert=_bool(raw, "disconnect_expired_cert"),
        require_session_mfa=_mfa(raw),
        record_session_default=_choice(
            record.get("default"), "record_session.default", RECORDING_MODES),
        record_session_ssh=_choice(record.get("ssh"), "record_session.ssh", RECORDING_MODES),
        lock=_choice(raw.get("lock"), "lock", LOCK_MODES),
        max_sessions=_count(raw, "max_sessions"),
        max_connections=_count(raw, "max_connections"),
        create_db_user=_bool(raw, "create_db_user"),
    )


def _smallest_nonzero(values: Sequence[int | None]) -> int | None:
    set_values = [v for v in values if v]
    return min(set_values) if set_values else None


def _recording_mode(options: Sequence[RoleOptions]) -> str:
    # RoleSet.SessionRecordingMode: an explicit per-service "strict" wins outright; else an
    # explicit per-service "best_effort" wins over every default; else the strictest default
    # (a role without one counts as best_effort). Limen adds "off", honoured only when no
    # role records at all (every role's effective mode is off).
    if any(o.record_session_ssh == "strict" for o in options):
        return "strict"
    if any(o.record_session_ssh == "best_effort" for o in options):
        return "best_effort"
    effective = [o.record_session_ssh or o.record_session_default or "best_effort"
                 for o in options]
    if any(o.record_session_ssh != "off" and o.record_session_default == "strict"
           for o in options):
        return "strict"
    if options and all(mode == "off" for mode in effective):
        return "off"
    return "best_effort"


def merge_options(options: Sequence[RoleOptions]) -> SessionOptions:
    """Combine the options of all of a user's roles (rules and sources inline)."""
    # AdjustSessionTTL: the shortest max_session_ttl; an unset one is 30h (CheckAndSetDefaults).
    ttls = [o.max_session_ttl or DEFAULT_MAX_SESSION_TTL for o in options]
    # AdjustClientIdleTimeout: the shortest non-zero timeout; zero/unset never restricts.
    idle = [o.client_idle_timeout for o in options
            if o.client_idle_timeout and o.client_idle_timeout > timedelta(0)]
    # SSHPortForwardMode (legacy port_forwarding): an explicit allow in any role returns
    # "on"; otherwise an explicit deny turns it off; with neither it is implicitly on.
    if any(o.port_forwarding is True for o in options):
        port_forwarding = True
    else:
        port_forwarding = not any(o.port_forwarding is False for o in options)
    # LockingMode: strict if any role says strict, else any explicit mode, else the default.
    locks = {o.lock for o in options if o.lock}
    lock = "strict" if "strict" in locks else ("best_effort" if locks else None)
    return SessionOptions(
        max_session_ttl=min(ttls, default=DEFAULT_MAX_SESSION_TTL),
        # CanForwardAgents: true when any role sets forward_agent.
        forward_agent=any(o.forward_agent is True for o in options),
        port_forwarding=port_forwarding,
        # CanCopyFiles: disabled when one or more roles disable it (unset = true).
        ssh_file_copy=not any(o.ssh_file_copy is False for o in options),
        client_idle_timeout=min(idle) if idle else None,
        # AdjustDisconnectExpiredCert: the most restrictive wins, i.e. any true.
        disconnect_expired_cert=any(o.disconnect_expired_cert is True for o in options),
        # getMFARequired: required when a role requires it (per resource: see checks).
        require_session_mfa=any(o.require_session_mfa is True for o in options),
        record_session=_recording_mode(options),
        lock=lock,
        # MaxSessions / MaxConnections: the smallest non-zero value; zero = unlimited.
        max_sessions=_smallest_nonzero([o.max_sessions for o in options]),
        max_connections=_smallest_nonzero([o.max_connections for o in options]),
    )
