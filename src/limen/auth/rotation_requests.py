"""What a CA rotation request declared on the Cluster document asks of a CA now: a pure decision.

A request (``limen.api.rotation_request``: ``{id, type, mode, phase, grace_period}``) is read
against the CA's stored rotation state (``limen.auth.rotation.RotationState``, which records
the id of the request that started the rotation under way, ``request``, and of the last one
that started any, ``last_request``)::

    id is the rotation under way's ──▶ manual: declared phase reached → nothing
    (state.request, phase ≠ standby)             a step the machine allows → step
                                                 any other → refused (why)
                                       auto: phase rollback → step to rollback; else nothing
                                       (auth moves it); the mode of a request cannot change
    id is the last request's, its rotation over ──▶ done: nothing, ever again
    new id ──▶ CA in standby: start (init; a manual request must declare init)
               CA rotating (a command, another request) ──▶ waiting for standby

:func:`decide` returns an :class:`Action` the reconciler (``limen.auth.rotation_declared``)
carries out through ``limen.auth.rotation_service.rotate_ca``, the call ``lmctl auth rotate``
reaches; a refusal is audited there and written to the document's status. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from limen.api.rotation_request import RotationRequest
from limen.auth.rotation import ALLOWED, Mode, Phase, RotationState

__all__ = ["Action", "Outcome", "decide"]


class Outcome(StrEnum):
    """What became of a request (the ``state`` of its entry in the document's status)."""

    START = "Started"
    """Starts a rotation (phase init)."""
    STEP = "Applied"
    """Moves the rotation under way to the declared phase."""
    REACHED = "Reached"
    """The rotation under way is in the declared phase (or auth moves it: auto)."""
    DONE = "Done"
    """The request's rotation is over; it is never run again."""
    WAITING = "Waiting"
    """A new request, while another rotation of the CA is under way: it starts at standby."""
    REFUSED = "Refused"
    """The machine does not allow it (audited)."""


@dataclass(frozen=True)
class Action:
    """The decision about one request: what to do and why."""

    outcome: Outcome
    message: str
    target: Phase | None = None
    """The phase to move to (START: init; STEP: the declared one)."""

    @property
    def changes(self) -> bool:
        return self.target is not None

    def to_status(self, request: RotationRequest, state: RotationState) -> dict[str, Any]:
        """The entry written to the document's ``status.rotation`` for this request's type."""
        return {"id": request.id, "mode": request.mode, "phase": request.phase or "",
                "state": self.outcome.value, "message": self.message,
                "ca_phase": state.phase.value}


def _under_way(state: RotationState) -> str:
    who = f"request {state.request!r}" if state.request else "a command"
    return f"phase {state.phase.value}, started by {who}"


def _own(request: RotationRequest, state: RotationState) -> Action:
    """The request whose rotation is under way."""
    ca = f"the {request.type} CA"
    running = Mode.AUTO if request.auto else Mode.MANUAL
    if state.mode is not running:
        return Action(Outcome.REFUSED, f"request {request.id!r} started {ca}'s rotation in "
                                       f"{state.mode.value} mode: its mode cannot change (a new "
                                       "id starts a new rotation once this one is over)")
    if request.auto:
        if request.phase == Phase.ROLLBACK.value and state.phase is not Phase.ROLLBACK:
            return Action(Outcome.STEP, f"{ca} rolls back from {state.phase.value}",
                          Phase.ROLLBACK)
        return Action(Outcome.REACHED, f"{ca} is in phase {state.phase.value}; auth moves it "
                                       "on by itself")
    target = Phase(str(request.phase))
    if target is state.phase:
        return Action(Outcome.REACHED, f"{ca} is in phase {target.value}")
    if target in ALLOWED[state.phase]:
        return Action(Outcome.STEP, f"{ca} moves from {state.phase.value} to {target.value}",
                      target)
    allowed = ", ".join(sorted(p.value for p in ALLOWED[state.phase]))
    return Action(Outcome.REFUSED, f"{ca} is in phase {state.phase.value}: it may go to "
                                   f"{allowed}, not {target.value} (one step per commit)")


def decide(request: RotationRequest, state: RotationState) -> Action:
    """What ``request`` asks of a CA whose rotation state is ``state`` (see the module doc)."""
    ca = f"the {request.type} CA"
    if state.phase is not Phase.STANDBY and state.request == request.id:
        return _own(request, state)
    if request.id == state.last_request:
        return Action(Outcome.DONE, f"request {request.id!r}'s rotation of {ca} is over; a new "
                                    "id starts a new one")
    if state.phase is not Phase.STANDBY:
        return Action(Outcome.WAITING, f"{ca} is rotating ({_under_way(state)}): request "
                                       f"{request.id!r} starts when it is back in standby")
    if request.auto and request.phase == Phase.ROLLBACK.value:
        return Action(Outcome.REFUSED, f"request {request.id!r} rolls back, but {ca} is in "
                                       "standby: there is nothing to roll back")
    if not request.auto and request.phase != Phase.INIT.value:
        return Action(Outcome.REFUSED, f"{ca} is in phase standby: a new rotation starts at "
                                       f"init, not {request.phase} (one step per commit)")
    return Action(Outcome.START, f"{ca} starts rotating ({request.mode})", Phase.INIT)
