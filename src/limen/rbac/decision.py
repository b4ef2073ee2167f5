"""The answer of every access check: allowed or not, and which role and rule decided.

``role`` and ``rule`` name the deciding role and field (``deny.node_labels``,
``allow.logins``, ``options.require_session_mfa``, ...); ``role`` is ``None`` when no single
role decided (nothing matched). ``reason`` is one short sentence for logs, audit events and
``lmctl access check``. Built by :mod:`limen.rbac.checks`; read by auth, the proxy, agents
and the CLIs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decision", "allow", "deny"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    role: str | None
    rule: str
    reason: str
    mfa_required: bool = False
    """The granting role requires per-session MFA. When the check was made without
    ``mfa_verified=True`` the decision is then a denial by ``options.require_session_mfa``."""

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        by = f"role {self.role!r}" if self.role else "no role"
        return f"{verdict} by {by} ({self.rule}): {self.reason}"


def allow(role: str | None, rule: str, reason: str, *, mfa_required: bool = False) -> Decision:
    return Decision(True, role, rule, reason, mfa_required)


def deny(role: str | None, rule: str, reason: str, *, mfa_required: bool = False) -> Decision:
    return Decision(False, role, rule, reason, mfa_required)
