"""CA rotation requests on the Cluster document (``spec.rotation``): their validation
(limen.api.rotation_request, through limen.api.validation and the CRD schema) and the pure
decision of what a request asks of a CA in a given state (limen.auth.rotation_requests)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from limen.api.loader import load_text
from limen.api.rotation_request import RotationRequest, parse_requests
from limen.api.validation import validate
from limen.auth.rotation import Mode, Phase, RotationState
from limen.auth.rotation_requests import Outcome, decide
from limen.errors import BadParameter, ValidationFailed


def _cluster(rotation: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "prod"},
        "spec": {"public_address": "proxy.example.com:3080", "rotation": rotation}})


def _errors(rotation: Any) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate(load_text(_cluster(rotation), "cluster.yaml"))
    return [f"{e.path}: {e.reason}" for e in caught.value.errors]


def test_valid_requests_validate_and_parse() -> None:
    [resource] = validate(load_text(_cluster([
        {"id": "h1", "type": "host", "mode": "manual", "phase": "init"},
        {"id": "u1", "type": "user", "mode": "auto", "grace_period": "24h"},
        {"id": "j1", "type": "jwt", "mode": "auto", "grace_period": "3h", "phase": "rollback"},
        {"id": "d1", "type": "db", "phase": "update_clients"},  # mode defaults to manual
    ]), "cluster.yaml"))
    assert parse_requests(resource.spec) == [
        RotationRequest("h1", "host", "manual", "init", timedelta(0)),
        RotationRequest("u1", "user", "auto", None, timedelta(hours=24)),
        RotationRequest("j1", "jwt", "auto", "rollback", timedelta(hours=3)),
        RotationRequest("d1", "db", "manual", "update_clients", timedelta(0))]


@pytest.mark.parametrize(("rotation", "expected"), [
    ([{"id": "t", "type": "tls", "phase": "init"}], "spec.rotation[0].type"),
    ([{"id": "a", "type": "user", "phase": "init"}, {"id": "a", "type": "host",
                                                      "phase": "init"}],
     "spec.rotation[1].id: id 'a' is used by request 0"),
    ([{"id": "a", "type": "user", "phase": "init"}, {"id": "b", "type": "user",
                                                      "phase": "init"}],
     "spec.rotation[1].type: one request per CA type: request 0 rotates user too"),
    ([{"id": "a", "type": "user"}], "spec.rotation[0].phase: required in manual mode"),
    ([{"id": "a", "type": "user", "mode": "auto"}],
     "spec.rotation[0].grace_period: required in auto mode"),
    ([{"id": "a", "type": "user", "mode": "auto", "grace_period": "1h", "phase": "init"}],
     "spec.rotation[0].phase: an auto request moves by itself"),
    ([{"id": "a", "type": "user", "phase": "halfway"}], "spec.rotation[0].phase"),
    ([{"id": "a", "type": "user", "mode": "auto", "grace_period": "soon"}],
     "spec.rotation[0].grace_period"),
    ([{"id": "a", "type": "user", "mode": "sometimes", "phase": "init"}],
     "spec.rotation[0].mode"),
    ([{"type": "user", "phase": "init"}], "spec.rotation[0].id"),
    ([{"id": "a", "type": "user", "phase": "init", "when": "now"}], "spec.rotation[0]"),
    ({"id": "a"}, "spec.rotation"),
])
def test_invalid_requests_are_refused(rotation: Any, expected: str) -> None:
    errors = _errors(rotation)
    assert any(e.startswith(expected) for e in errors), errors


def test_parse_refuses_a_document_that_skipped_validation() -> None:
    with pytest.raises(BadParameter, match="one request per CA type"):
        parse_requests({"rotation": [{"id": "a", "type": "host", "phase": "init"},
                                     {"id": "b", "type": "host", "phase": "init"}]})


def _manual(rid: str, phase: str) -> RotationRequest:
    return RotationRequest(rid, "host", "manual", phase, timedelta(0))


def _auto(rid: str, phase: str | None = None) -> RotationRequest:
    return RotationRequest(rid, "host", "auto", phase, timedelta(minutes=3))


def _state(phase: Phase, request: str = "", last: str = "",
           mode: Mode = Mode.MANUAL) -> RotationState:
    return RotationState(phase, mode, request=request, last_request=last or request)


@pytest.mark.parametrize(("request_", "state", "outcome", "target"), [
    # a new id on a CA at rest starts a rotation (manual: declared init)
    (_manual("r1", "init"), RotationState(), Outcome.START, Phase.INIT),
    (_auto("r1"), RotationState(), Outcome.START, Phase.INIT),
    # a new manual request must start at init: a jump is refused
    (_manual("r1", "update_servers"), RotationState(), Outcome.REFUSED, None),
    (_auto("r1", "rollback"), RotationState(), Outcome.REFUSED, None),
    # the running rotation's request: one step per commit
    (_manual("r1", "update_clients"), _state(Phase.INIT, "r1"), Outcome.STEP,
     Phase.UPDATE_CLIENTS),
    (_manual("r1", "init"), _state(Phase.INIT, "r1"), Outcome.REACHED, None),
    (_manual("r1", "update_servers"), _state(Phase.INIT, "r1"), Outcome.REFUSED, None),
    (_manual("r1", "init"), _state(Phase.UPDATE_CLIENTS, "r1"), Outcome.REFUSED, None),
    (_manual("r1", "rollback"), _state(Phase.UPDATE_SERVERS, "r1"), Outcome.STEP,
     Phase.ROLLBACK),
    (_manual("r1", "standby"), _state(Phase.ROLLBACK, "r1"), Outcome.STEP, Phase.STANDBY),
    (_manual("r1", "standby"), _state(Phase.UPDATE_SERVERS, "r1"), Outcome.STEP,
     Phase.STANDBY),
    # the request whose rotation is over never runs again
    (_manual("r1", "standby"), _state(Phase.STANDBY, "r1"), Outcome.DONE, None),
    (_manual("r1", "init"), _state(Phase.STANDBY, "r1"), Outcome.DONE, None),
    (_manual("r1", "init"), _state(Phase.INIT, "", last="r1"), Outcome.DONE, None),
    # a new id while another rotation is under way waits for standby
    (_manual("r2", "init"), _state(Phase.INIT, "r1"), Outcome.WAITING, None),
    (_manual("r2", "init"), _state(Phase.UPDATE_CLIENTS, ""), Outcome.WAITING, None),
    (_manual("r2", "init"), _state(Phase.STANDBY, "r1"), Outcome.START, Phase.INIT),
    # auto: auth moves it; a declared rollback rolls it back
    (_auto("r1"), _state(Phase.UPDATE_CLIENTS, "r1", mode=Mode.AUTO), Outcome.REACHED, None),
    (_auto("r1", "rollback"), _state(Phase.UPDATE_CLIENTS, "r1", mode=Mode.AUTO),
     Outcome.STEP, Phase.ROLLBACK),
    (_auto("r1", "rollback"), _state(Phase.ROLLBACK, "r1", mode=Mode.AUTO), Outcome.REACHED,
     None),
    # the mode of a running request cannot change
    (_manual("r1", "update_clients"), _state(Phase.INIT, "r1", mode=Mode.AUTO),
     Outcome.REFUSED, None),
    (_auto("r1"), _state(Phase.INIT, "r1"), Outcome.REFUSED, None),
])
def test_decide(request_: RotationRequest, state: RotationState, outcome: Outcome,
                target: Phase | None) -> None:
    action = decide(request_, state)
    assert (action.outcome, action.target) == (outcome, target), action.message
    assert action.message


def test_refusals_say_why() -> None:
    jump = decide(_manual("r1", "update_servers"), _state(Phase.INIT, "r1"))
    assert jump.message == ("the host CA is in phase init: it may go to rollback, "
                            "update_clients, not update_servers (one step per commit)")
    new = decide(_manual("r1", "update_servers"), RotationState())
    assert "a new rotation starts at init, not update_servers" in new.message
    waiting = decide(_manual("r2", "init"), _state(Phase.INIT, ""))
    assert "started by a command" in waiting.message


def test_state_round_trips_the_request_ids() -> None:
    state = RotationState(Phase.INIT, Mode.AUTO, timedelta(hours=1), request="r1",
                          last_request="r1")
    assert RotationState.from_dict(state.to_dict()) == state
    assert RotationState.from_dict({"phase": "standby"}).last_request == ""


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster-rotation.yaml"


def test_the_example_validates_as_shipped_and_uncommented() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    [shipped] = validate(load_text(text, "cluster-rotation.yaml"))
    assert parse_requests(shipped.spec) == []
    uncommented = text.replace("  # rotation:", "  rotation:").replace("  # - ", "  - ") \
        .replace("  #   ", "    ")
    [declared] = validate(load_text(uncommented, "cluster-rotation.yaml"))
    assert [(r.id, r.type, r.mode) for r in parse_requests(declared.spec)] == [
        ("host-2026-12", "host", "manual"), ("user-2026-q4", "user", "auto")]
