"""Table rows of ``lmctl``'s listings (users, nodes, tokens, audit events), from the same
JSON-shaped records ``-o json|yaml`` prints.

Pure functions; called by ``limen.cli.lmctl``, ``limen.cli.lmctl_users``,
``limen.cli.lmctl_nodes`` and ``limen.cli.lmctl_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "AUDIT_HEADERS", "NODE_HEADERS", "TOKEN_HEADERS", "USER_HEADERS", "audit_rows",
    "labels_text", "mask_token", "node_rows", "token_rows", "user_rows", "user_status",
]

USER_HEADERS = ("NAME", "ROLES", "LOGINS", "ORIGIN", "STATUS")
NODE_HEADERS = ("HOSTNAME", "ID", "ADDRESS", "LABELS")
TOKEN_HEADERS = ("TOKEN", "ID", "TYPE", "EXPIRES", "USE", "LABELS")
AUDIT_HEADERS = ("TIME", "EVENT", "CODE", "USER", "SESSION", "SUCCESS")


def _csv(values: Iterable[Any]) -> str:
    return ",".join(str(v) for v in values) or "-"


def labels_text(labels: Mapping[str, Any]) -> str:
    """``env=dev,team=core`` (sorted), or ``-``."""
    return _csv(f"{k}={v}" for k, v in sorted(labels.items()))


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def user_status(row: Mapping[str, Any]) -> str:
    """``signed up``, ``pending sign-up``, and ``, locked until ...`` while locked."""
    status = "signed up" if row.get("signed_up") else "pending sign-up"
    if row.get("locked"):
        until = row.get("locked_until")
        status += f", locked until {_utc(float(until))}" if until else ", locked"
    return status


def user_rows(users: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    return [(str(u["name"]), _csv(u.get("roles") or ()), _csv(u.get("logins") or ()),
             str(u.get("origin") or "-"), user_status(u)) for u in users]


def node_rows(nodes: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    def where(node: Mapping[str, Any]) -> str:
        if node.get("address"):
            return str(node["address"])
        return "(tunnel)" if node.get("tunnel") else "-"

    return [(str(n.get("hostname") or "-"), str(n.get("host_id") or "-"), where(n),
             labels_text(n.get("labels") or {})) for n in nodes]


def mask_token(hint: str | None) -> str:
    """A token as a listing shows it: its first characters, the rest masked; the secret
    itself is never stored (records made before hints existed show ``(hidden)``)."""
    return f"{hint}{'*' * 10}" if hint else "(hidden)"


def _expiry(text: str) -> str:
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text or "-"


def token_rows(tokens: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    return [(mask_token(t.get("hint")), str(t.get("id", "")), str(t.get("type", "")),
             _expiry(str(t.get("expires", ""))),
             "single use" if t.get("single_use") else "reusable",
             labels_text(t.get("labels") or {})) for t in tokens]


def audit_rows(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """Rows in the order given (``lmctl audit search`` passes them newest first)."""
    return [(str(e.get("time", "")), str(e.get("event", "")), str(e.get("code", "")),
             str(e.get("user") or "-"), str(e.get("session_id") or "-"),
             str(e.get("success", ""))) for e in events]
