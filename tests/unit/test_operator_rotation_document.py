"""The pure parts of forwarding a Cluster CR's ``spec.rotation``: the document built from the
CR, the refusal when it mixes with ``spec.ca_rotation``, the CR's status from auth's answer,
and when the operator looks at auth again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from limen.operator.conditions import Check, Observation, build_status
from limen.operator.documents import InvalidObject
from limen.operator.rotation_document import (
    CONDITION,
    forwarded,
    mixed_problem,
    outcome,
    pending,
    removed,
)
from limen.operator.rotation_forward import poll_seconds, with_rotation_condition

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOST_INIT = {"id": "host-1", "type": "host", "mode": "manual", "phase": "init"}


def cr(*rotation: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "main", "namespace": "limen", "uid": "u1", "generation": 3},
        "spec": {"public_address": "limen.example.com:443", "proxy": {"replicas": 2},
                 "auth": {"replicas": 1}, **spec}}
    if rotation:
        body["spec"]["rotation"] = list(rotation)
    return body


def test_the_document_carries_only_the_rotation_named_as_the_cluster() -> None:
    declared = forwarded(cr(HOST_INIT))
    assert declared.name == "main"
    assert declared.ref == "clusters/limen/main"
    assert declared.document == {
        "apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "main",
                     "annotations": {"limen.dev/kubernetes-object": "clusters/limen/main"}},
        "spec": {"public_address": "limen.example.com:443", "rotation": [HOST_INIT]}}
    # spec.cluster_name is the name auth knows the cluster by
    assert forwarded(cr(HOST_INIT, cluster_name="prod")).name == "prod"


def test_a_document_auth_would_refuse_is_invalid_here() -> None:
    with pytest.raises(InvalidObject, match="tls CA does not rotate"):
        forwarded(cr({"id": "t", "type": "tls", "mode": "manual", "phase": "init"}))


@pytest.mark.parametrize(("legacy", "mixed"), [
    ({"type": "host", "nonce": "n1"}, True), ({"type": "all", "nonce": "n1"}, True),
    ({"type": "user", "nonce": "n1"}, False), (None, False)])
def test_ca_rotation_and_rotation_of_one_type_do_not_mix(legacy: dict[str, Any] | None,
                                                         mixed: bool) -> None:
    body = cr(HOST_INIT, **({"ca_rotation": legacy} if legacy else {}))
    problem = mixed_problem(body)
    assert (problem is not None) is mixed
    if mixed:
        assert problem is not None
        assert "host" in problem
        assert "do not mix" in problem


def test_status_from_auths_answer() -> None:
    body = cr(HOST_INIT, **{})
    phases = {"host": {"phase": "init"}, "user": {"phase": "standby"}}
    answer = {"host": {"id": "host-1", "phase": "init", "state": "Started", "mode": "manual",
                       "message": "the host CA starts rotating (manual)", "ca_phase": "init"}}
    result = outcome(body, answer, "", phases)
    assert result.fields == {
        "rotation": {"host": {"id": "host-1", "mode": "manual", "phase": "init",
                              "state": "Started",
                              "message": "the host CA starts rotating (manual)",
                              "caPhase": "init"}},
        "caPhases": {"host": "init", "user": "standby"}}
    assert result.check == Check(True, "Applied", "host: the host CA starts rotating (manual)")


def test_an_answer_to_another_phase_is_pending() -> None:
    body = cr({**HOST_INIT, "phase": "update_clients"})
    answer = {"host": {"id": "host-1", "phase": "init", "state": "Reached", "message": "m"}}
    result = outcome(body, answer, "", {"host": {"phase": "init"}})
    assert result.fields["rotation"]["host"]["state"] == "Pending"
    assert result.check is not None
    assert result.check.status is None
    assert result.check.reason == "Pending"


def test_a_refusal_and_a_document_error_are_false() -> None:
    body = cr({**HOST_INIT, "phase": "standby"})
    answer = {"host": {"id": "host-1", "phase": "standby", "state": "Refused",
                       "message": "the host CA is in phase init: it may go to ..."}}
    refused = outcome(body, answer, "", {"host": {"phase": "init"}}).check
    assert refused == Check(False, "Refused", "host: the host CA is in phase init: it may go "
                                              "to ...")
    error = outcome(body, answer, "several Cluster documents describe cluster main", {}).check
    assert error is not None
    assert (error.status, error.reason) == (False, "NotApplied")
    assert "several Cluster documents" in error.message


def test_removed_drops_the_status_fields() -> None:
    result = removed({})
    assert result.fields == {"rotation": None, "caPhases": None}
    assert result.check is not None
    assert (result.check.status, result.check.reason) == (
        True, "Removed")


def _with(body: dict[str, Any], check: Check, rotation: dict[str, Any],
          generation: int = 3) -> dict[str, Any]:
    status = build_status({}, Observation(Check(True, "Available"), Check(True, "Valid"),
                                          Check(True, "Owned")), generation, T0,
                          {"rotation": rotation})
    return {**body, "status": with_rotation_condition(status, {}, check, generation, T0)}


def test_pending_until_auth_settles_the_request() -> None:
    body = cr(HOST_INIT)
    assert pending(body)  # never looked at
    entry = {"id": "host-1", "phase": "init", "state": "Started"}
    assert pending(_with(body, Check(True, "Applied"), {"host": entry}))
    reached = {"host": {**entry, "state": "Reached"}}
    assert not pending(_with(body, Check(True, "Applied"), reached))
    assert pending(_with(body, Check(True, "Applied"), reached, generation=2))  # an older spec
    auto = cr({"id": "u", "type": "user", "mode": "auto", "grace_period": "3h"})
    assert pending(_with(auto, Check(True, "Applied"),
                         {"user": {"id": "u", "phase": "", "state": "Reached"}}))
    assert not pending(_with(auto, Check(True, "Applied"),
                             {"user": {"id": "u", "phase": "", "state": "Done"}}))
    refused = {"host": {**entry, "state": "Refused"}}
    assert not pending(_with(body, Check(False, "Refused", "x"), refused))
    assert pending(_with(body, Check(False, "AuthUnreachable", "x"), {}))
    assert not pending(_with(body, Check(False, "MixedRotation", "x"), {}))
    dropped = cr()
    assert pending(_with(dropped, Check(True, "Applied"), reached))  # still to remove
    assert not pending(dropped)


def test_the_condition_keeps_its_transition_time() -> None:
    body = _with(cr(HOST_INIT), Check(True, "Applied", "a"), {})
    later = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    status = build_status(body["status"], Observation(
        Check(True, "Available"), Check(True, "Valid"), Check(True, "Owned")), 3, later)
    kept = with_rotation_condition(status, body["status"], None, 3, later)
    [mine] = [c for c in kept["conditions"] if c["type"] == CONDITION]
    assert mine["message"] == "a"  # None: kept as it was
    again = with_rotation_condition(status, body["status"], Check(True, "Applied", "b"), 3,
                                    later)
    [mine] = [c for c in again["conditions"] if c["type"] == CONDITION]
    assert (mine["message"], mine["lastTransitionTime"]) == ("b", "2026-12-01T12:00:00Z")
    assert [c["type"] for c in again["conditions"]][:5] == [
        "Ready", "Reconciling", "Stalled", "Valid", "Owned"]


def test_poll_interval() -> None:
    assert poll_seconds(60.0) == 10.0
    assert poll_seconds(1.0) == 1.0
