"""``lmctl lock``: lock a user, role, node, login or MFA device at once, and the table of
``lmctl get locks``.

``lmctl lock --user bob --ttl 1h --message "..."`` creates a Lock (origin ``api``) with a
generated name and prints the name; ``lmctl rm lock/NAME`` lifts it. The same Lock can be a
document in Git or a Kubernetes CR (see docs/locks.md). Registered on the ``lmctl`` group by
``limen.cli.lmctl``, which also shows ``get locks`` with :func:`lock_rows`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from limen.api.lock import TARGET_FIELDS, parse_expires
from limen.api.resources import API_VERSION, ORIGIN_LABEL
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmctl_run import run_admin, seconds
from limen.errors import BadParameter

__all__ = ["LOCK_HEADERS", "lock", "lock_document", "lock_rows"]

LOCK_HEADERS = ("NAME", "TARGET", "MESSAGE", "EXPIRES", "ORIGIN")


def lock_document(target: Mapping[str, str], message: str, ttl_seconds: int | None, *,
                  now: datetime, name: str | None = None) -> dict[str, Any]:
    """A Lock document; a generated name unless ``name`` is given."""
    if not target:
        raise BadParameter("name what to lock: --user, --role, --node, --login or --mfa-device")
    spec: dict[str, Any] = {"target": dict(target), "message": message}
    if ttl_seconds is not None:
        if ttl_seconds <= 0:
            raise BadParameter("--ttl must be positive")
        expires = now.astimezone(UTC) + timedelta(seconds=ttl_seconds)
        spec["expires"] = expires.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {"apiVersion": API_VERSION, "kind": "Lock",
            "metadata": {"name": name or f"lock-{secrets.token_hex(6)}"}, "spec": spec}


def _expiry(value: Any, now: datetime) -> str:
    """The EXPIRES column: ``never``, the time, or the time and ``(expired)`` once it passed
    (a lock from Git or Kubernetes stays listed, ignored, until its source removes it)."""
    if not value:
        return "never"
    try:
        passed = parse_expires(str(value)) <= now
    except BadParameter:
        return str(value)
    return f"{value} (expired)" if passed else str(value)


def lock_rows(items: Sequence[Mapping[str, Any]],
              now: datetime | None = None) -> list[tuple[str, str, str, str, str]]:
    now = now or datetime.now(UTC)
    rows = []
    for doc in items:
        meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
        target = spec.get("target") or {}
        rows.append((
            str(meta.get("name", "")),
            ",".join(f"{k}={target[k]}" for k in TARGET_FIELDS if k in target),
            str(spec.get("message") or ""),
            _expiry(spec.get("expires"), now),
            str((meta.get("labels") or {}).get(ORIGIN_LABEL, "-")),
        ))
    return rows


@click.command()
@click.option("--user", help="Lock this user.")
@click.option("--role", help="Lock every user holding this role.")
@click.option("--node", help="Lock this node (host id or hostname).")
@click.option("--login", help="Lock this Unix login on nodes.")
@click.option("--mfa-device", "mfa_device", help="Lock this MFA device.")
@click.option("--ttl", help="Lift the lock after this long (30m, 1h, 2d); default: never.")
@click.option("--message", default="", help="What the locked user reads.")
@click.option("--name", help="The lock's name (default: generated).")
@OUTPUT_OPTION
@handle_errors
def lock(user: str | None, role: str | None, node: str | None, login: str | None,
         mfa_device: str | None, ttl: str | None, message: str, name: str | None,
         output: str) -> None:
    """Lock a user, role, node, login or MFA device at once (every field given must match)."""
    from limen.api.loader import SourceDocument  # PyYAML: here

    fields = {"user": user, "role": role, "node": node, "login": login,
              "mfa_device": mfa_device}
    target = {k: v for k, v in fields.items() if v}
    document = lock_document(target, message, seconds(ttl) if ttl else None,
                             now=datetime.now(UTC), name=name)
    source = SourceDocument("<lmctl lock>", 0, 1, document)
    run_admin(lambda admin: admin.apply([source]))
    if output != "text":
        emit_documents([document], output)
        return
    click.echo(document["metadata"]["name"])
