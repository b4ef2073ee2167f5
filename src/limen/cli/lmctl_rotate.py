"""``lmctl auth rotate``: move a rotation of the user or host CA through its phases.

::

    lmctl auth rotate --type user --manual              standby → init (manual mode)
    lmctl auth rotate --type user --phase update_clients
    lmctl auth rotate --type host --grace-period 24h    init, then auth moves on by itself
    lmctl auth rotate --type user --rollback            back to the old key (then --phase standby)
    lmctl auth rotate --rollback                        roll back every rotation under way

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

ROTATABLE = ("user", "host")
PHASES = ("init", "update_clients", "update_servers", "standby", "rollback")


def rotation_lines(rotation: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``lmctl status`` lines: each rotatable CA's phase (and mode while one is under way)."""
    lines = []
    for ca_type, state in sorted(rotation.items()):
        phase = str(state.get("phase", "standby"))
        detail = "" if phase == "standby" else \
            f" ({state.get('mode', 'manual')}, since {state.get('phase_started', '?')})"
        lines.append(f"CA {ca_type} rotation: {phase}{detail}")
    return lines


@click.command()
@click.option("--type", "ca_type", type=click.Choice(ROTATABLE),
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
    """Rotate the user or host CA in phases, without downtime (see docs/ca-rotation.md)."""
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
        raise BadParameter("--type user|host is required (except with --rollback alone)")

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
