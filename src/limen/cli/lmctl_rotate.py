"""``lmctl auth rotate``: move a rotation of the user, host, db or jwt CA through its phases.

::

    lmctl auth rotate --type user --manual              standby → init (manual mode)
    lmctl auth rotate --type user --phase update_clients
    lmctl auth rotate --type host --grace-period 24h    init, then auth moves on by itself
    lmctl auth rotate --type user --rollback            back to the old key (then --phase standby)
    lmctl auth rotate --rollback                        roll back every rotation under way
    lmctl auth rotate --type db --manual                the DB CA (then lmctl auth export
                                                        --type db-client for the databases)
    lmctl auth rotate --type tls                        refused, with the reason

The phases and what each process does are in docs/ca-rotation.md; auth does the work
(``limen.auth.rotation_service``) and audits every change as ``ca.rotation``. ``lmctl status``
shows each CA's phase (:func:`rotation_lines`). Registered on ``lmctl auth`` by
``limen.cli.lmctl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmctl_run import run_admin, seconds
from limen.errors import BadParameter

__all__ = ["rotate", "rotation_lines"]

ROTATABLE = ("user", "host", "db", "jwt")
CHOICES = (*ROTATABLE, "tls")
"""``tls`` is accepted so that auth refuses it with its reason (and audits the refusal)."""
PHASES = ("init", "update_clients", "update_servers", "standby", "rollback")


DB_HINTS = {
    "init": "The databases must trust the new DB CA before update_clients: put the output of "
            "`lmctl auth export --type db-client` (both CA certificates) in PostgreSQL's "
            "ssl_ca_file / MariaDB's ssl-ca and reload them.",
    "update_servers": "Sign the databases' server certificates with the new DB CA now "
                      "(`lmctl auth sign --format db`): standby retires the old one, and the "
                      "db agents verify the servers against the DB CA.",
    "standby": "The old DB CA is retired: `lmctl auth export --type db-client` now prints the "
               "new CA certificate only; put it in ssl_ca_file / ssl-ca.",
    "rollback": "The old DB CA signs again; keep both CA certificates in ssl_ca_file / ssl-ca "
                "until standby.",
}
"""What a DBA does after each phase change of the db CA (printed by ``lmctl auth rotate``)."""


def rotation_lines(rotation: Mapping[str, Mapping[str, Any]],
                   requests: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """``lmctl status`` lines: each rotatable CA's phase (and mode while one is under way),
    the id of the request on the Cluster document driving it, and what became of each
    request (``requests``: the document's ``status.rotation``, refusals with their reason)."""
    lines = []
    for ca_type, state in sorted(rotation.items()):
        phase = str(state.get("phase", "standby"))
        detail = "" if phase == "standby" else \
            f" ({state.get('mode', 'manual')}, since {state.get('phase_started', '?')})"
        if state.get("request"):
            detail += f" [request {state['request']}]"
        lines.append(f"CA {ca_type} rotation: {phase}{detail}")
    for ca_type, entry in sorted((requests or {}).items()):
        lines.append(f"CA {ca_type} request {entry.get('id')}: {entry.get('state')}: "
                     f"{entry.get('message')}")
    return lines


@click.command()
@click.option("--type", "ca_type", type=click.Choice(CHOICES),
              help="The CA to rotate (with --rollback alone: every rotation under way).")
@click.option("--phase", type=click.Choice(PHASES), help="Move to this phase (manual mode).")
@click.option("--grace-period", help="Start an automatic rotation over this long (24h): auth "
                                     "moves on after a third of it per phase.")
@click.option("--manual", is_flag=True, help="Start a rotation that moves only by command.")
@click.option("--rollback", is_flag=True, help="Go back to the old key.")
@OUTPUT_OPTION
@handle_errors
def rotate(ca_type: str | None, phase: str | None, grace_period: str | None, manual: bool,
           rollback: bool, output: str) -> None:
    """Rotate the user, host, db or jwt CA in phases, without downtime (see docs/ca-rotation.md)."""
    if rollback and phase:
        raise BadParameter("give either --rollback or --phase, not both")
    if grace_period and (manual or phase or rollback):
        raise BadParameter("--grace-period starts an automatic rotation: not with --manual, "
                           "--phase or --rollback")
    change: dict[str, Any] = {"manual": not grace_period, "rollback": rollback}
    if phase:
        change["phase"] = phase
    if grace_period:
        change["grace_period_seconds"] = seconds(grace_period)
    if ca_type is None and not rollback:
        raise BadParameter("--type user|host|db|jwt is required (except with --rollback alone)")

    async def action(admin: Any) -> list[dict[str, Any]]:
        types = [ca_type] if ca_type else [
            t for t, s in (await admin.status()).get("ca_rotation", {}).items()
            if s.get("phase") not in ("standby", "rollback")]
        if not types:
            raise BadParameter("no CA rotation is under way: nothing to roll back")
        return [await admin.rotate_ca(t, change) for t in types]

    states = run_admin(action)
    if output != "text":
        emit_documents(states, output)
        return
    for state in states:
        click.echo(f"CA {state['type']}: phase {state['phase']} ({state['mode']})")
        hint = DB_HINTS.get(state["phase"]) if state["type"] == "db" else None
        if hint:
            click.echo(hint)
