"""CA rotation in the auth server: the audited command and the loop that follows it.

* :func:`rotate_ca` is what ``lmctl auth rotate`` reaches (``POST
  /v1/authorities/{type}/rotate``, ``limen.auth.http.rotation``, or the offline admin) for
  the user, host, db and jwt CAs (the TLS CA is refused with the reason,
  ``limen.auth.rotation.NOT_ROTATABLE``): start a rotation (``init``, manual or
  automatic with a grace period), move it to a phase, or roll it back. Every phase change is
  audited as ``ca.rotation`` (type, from, to, mode, who); a refused one too, with the reason.
* :class:`RotationService` runs in every auth replica: every ``interval`` seconds it reloads
  the CAs another replica rotated (so this one signs with the right key) and, in ``auto``
  mode, moves a rotation to its next phase when due (``limen.auth.rotation.due_phase``). The
  move is a compare-and-swap on the phase read, so with several replicas exactly one moves it
  and audits it (``who: auth``).

Started by ``limen.auth.auth_service``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from limen.aio.task_service import TaskService
from limen.auth.core import AuthServer
from limen.auth.rotation import (
    ROTATABLE,
    Mode,
    Phase,
    RotationState,
    check_rotatable,
    due_phase,
)
from limen.ca.authority import CertAuthorityType
from limen.errors import BadParameter, LimenError

__all__ = ["RotationService", "rotate_ca", "rotation_status"]

log = logging.getLogger(__name__)

AUTO_ACTOR = "auth"
"""The ``who`` of phase changes auth makes by itself (auto mode)."""


def _ca_type(value: str) -> CertAuthorityType:
    try:
        ca_type = CertAuthorityType(value)
    except ValueError:
        raise BadParameter(f"unknown CA type {value!r}") from None
    check_rotatable(ca_type)
    return ca_type


def _target(state: RotationState, phase: str | None, rollback: bool) -> Phase:
    if rollback:
        if phase:
            raise BadParameter("give either --rollback or --phase, not both")
        return Phase.ROLLBACK
    if phase:
        try:
            return Phase(phase)
        except ValueError:
            raise BadParameter(f"unknown rotation phase {phase!r}: one of "
                               f"{', '.join(p.value for p in Phase)}") from None
    if state.phase is not Phase.STANDBY:
        raise BadParameter(f"a rotation is under way (phase {state.phase.value}): give "
                           "--phase or --rollback")
    return Phase.INIT


async def rotate_ca(auth: AuthServer, ca_type_name: str, *, actor: str,
                    phase: str | None = None, rollback: bool = False, manual: bool = True,
                    grace_period_seconds: int | None = None, request: str = "",
                    expect_request: str | None = None,
                    audit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One phase change of this cluster's CA of ``ca_type_name``, audited; its new state.
    ``request`` / ``expect_request``: the declared request starting the rotation / whose
    rotation this must be (``limen.auth.rotation_requests``); ``audit``: fields added to the
    ``ca.rotation`` event (how the change came: ``via``, the request, the Git revision)."""
    fields: dict[str, Any] = {**(audit or {}), "ca_type": ca_type_name}
    try:
        ca_type = _ca_type(ca_type_name)
        before = auth.authorities.rotation(ca_type)
        target = _target(before, phase, rollback)
        fields["from"], fields["to"] = before.phase.value, target.value
        if grace_period_seconds is not None and grace_period_seconds < 0:
            raise BadParameter("the grace period must not be negative")
        mode = Mode.MANUAL if manual or not grace_period_seconds else Mode.AUTO
        grace = timedelta(seconds=grace_period_seconds or 0)
        changed = await auth.authorities.change_rotation(
            ca_type, target, now=auth.now(), mode=mode, grace_period=grace, request=request,
            expect_request=expect_request)
        assert changed is not None
    except LimenError as err:
        await auth.emit("ca.rotation", success=False, user=actor, reason=str(err), **fields)
        raise
    before, after = changed
    moved: dict[str, Any] = {"from": before.phase.value, "to": after.phase.value}
    await auth.emit("ca.rotation", user=actor, **{**(audit or {}), "ca_type": ca_type.value},
                    mode=after.mode.value, **moved)
    return {"type": ca_type.value, **after.to_dict()}


def rotation_status(auth: AuthServer) -> dict[str, dict[str, Any]]:
    """``type -> rotation state`` of the rotatable CAs (``lmctl status``)."""
    return {t.value: auth.authorities.rotation(t).to_dict() for t in ROTATABLE}


class RotationService(TaskService):
    """See the module doc."""

    name = "ca-rotation"

    def __init__(self, auth: AuthServer, *, interval: float = 1.0) -> None:
        self.auth = auth
        self.interval = interval

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except (LimenError, OSError) as err:
                log.warning("CA rotation: %s", err)
            await asyncio.sleep(self.interval)

    async def step(self) -> None:
        """Reload what other replicas rotated; move due automatic rotations on."""
        await self.auth.authorities.refresh()
        for ca_type in ROTATABLE:
            state = self.auth.authorities.rotation(ca_type)
            target = due_phase(state, self.auth.now())
            if target is None:
                continue
            changed = await self.auth.authorities.change_rotation(
                ca_type, target, now=self.auth.now(), expect=state.phase)
            if changed is not None:
                moved: dict[str, Any] = {"from": state.phase.value, "to": target.value}
                if state.request:  # started by a request on the Cluster document
                    moved["request_id"] = state.request
                await self.auth.emit("ca.rotation", user=AUTO_ACTOR, ca_type=ca_type.value,
                                     mode=Mode.AUTO.value, **moved)
