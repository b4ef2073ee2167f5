"""status.conditions: the metav1.Condition shape, kstatus meaning, and lastTransitionTime that
moves only when a status flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import yaml
from jsonschema import Draft4Validator

from limen.api.schemas import json_schema
from limen.operator.conditions import (
    CONDITION_TYPES,
    Check,
    Observation,
    build_conditions,
    build_status,
    format_time,
    merge_conditions,
    status_changes,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
READY = Observation(Check(True, "Applied", "Role/dev created in Limen"),
                    Check(True, "Valid"), Check(True, "Owned"))
UNREACHABLE = Observation(Check(False, "AuthUnreachable", "cannot reach auth"),
                          Check(True, "Valid"), Check(True, "Owned"), reconciling=True)
INVALID = Observation(Check(False, "Invalid", "spec.allow.logins: bad"),
                      Check(False, "Invalid", "spec.allow.logins: bad"),
                      Check(None, "NotChecked"), stalled=True)


def by_type(conditions: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(c["type"]): c for c in conditions}


def test_exact_metav1_condition_shape_and_crd_schema() -> None:
    conditions = build_conditions(READY, 3, T0)
    assert [c["type"] for c in conditions] == list(CONDITION_TYPES)
    for item in conditions:
        assert set(item) == {"type", "status", "observedGeneration", "lastTransitionTime",
                             "reason", "message"}
        assert item["observedGeneration"] == 3
        assert item["lastTransitionTime"] == "2024-05-01T12:00:00Z"
    status_schema = json_schema("Role")["properties"]["status"]
    errors = list(Draft4Validator(status_schema).iter_errors(
        {"observedGeneration": 3, "conditions": conditions}))
    assert errors == []


@pytest.mark.parametrize(("observation", "expected"), [
    (READY, {"Ready": "True", "Reconciling": "False", "Stalled": "False", "Valid": "True",
             "Owned": "True"}),
    (UNREACHABLE, {"Ready": "False", "Reconciling": "True", "Stalled": "False",
                   "Valid": "True", "Owned": "True"}),
    (INVALID, {"Ready": "False", "Reconciling": "False", "Stalled": "True", "Valid": "False",
               "Owned": "Unknown"}),
])
def test_kstatus_meaning(observation: Observation, expected: dict[str, str]) -> None:
    found = by_type(build_conditions(observation, 1, T0))
    assert {t: c["status"] for t, c in found.items()} == expected
    if observation.stalled:
        assert found["Stalled"]["reason"] == observation.ready.reason
        assert found["Stalled"]["message"] == observation.ready.message
    if observation.reconciling:
        assert found["Reconciling"]["reason"] == observation.ready.reason


def test_last_transition_time_moves_only_on_a_flip() -> None:
    first = build_status(None, UNREACHABLE, 1, T0)
    # same statuses, new message and generation: times stay
    again = build_status(first, Observation(Check(False, "AuthUnreachable", "still down"),
                                            Check(True, "Valid"), Check(True, "Owned"),
                                            reconciling=True), 2, T1)
    assert all(c["lastTransitionTime"] == format_time(T0) for c in again["conditions"])
    assert by_type(again["conditions"])["Ready"]["message"] == "still down"
    assert again["observedGeneration"] == 2
    # Ready, Reconciling flip; Stalled, Valid, Owned do not
    ready = build_status(again, READY, 2, T1)
    times = {t: c["lastTransitionTime"] for t, c in by_type(ready["conditions"]).items()}
    assert times == {"Ready": format_time(T1), "Reconciling": format_time(T1),
                     "Stalled": format_time(T0), "Valid": format_time(T0),
                     "Owned": format_time(T0)}


def test_other_writers_conditions_and_fields_are_kept() -> None:
    previous = {"conditions": [{"type": "Healthy", "status": "True", "reason": "X",
                                "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}],
                "note": "kept"}
    status = build_status(previous, READY, 1, T0, {"limenName": "team-a.dev"})
    assert status["note"] == "kept"
    assert status["limenName"] == "team-a.dev"
    assert by_type(status["conditions"])["Healthy"] == previous["conditions"][0]


def test_merge_without_previous_uses_new_times() -> None:
    desired = build_conditions(READY, 1, T1)
    assert merge_conditions(None, desired) == desired


def test_status_changes_is_empty_when_nothing_changed() -> None:
    status = build_status(None, READY, 1, T0, {"limenName": "x"})
    same = build_status(status, READY, 1, T1, {"limenName": "x"})
    assert status_changes(status, same) == {}
    assert set(status_changes(status, build_status(status, READY, 2, T1))) == {
        "observedGeneration", "conditions"}


def test_reasons_must_be_camel_case_and_observations_consistent() -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        Check(False, "not camel")
    with pytest.raises(ValueError, match="either"):
        Observation(Check(False, "X"), Check(True, "Valid"), Check(True, "Owned"),
                    reconciling=True, stalled=True)
    with pytest.raises(ValueError, match="ready"):
        Observation(Check(True, "X"), Check(True, "Valid"), Check(True, "Owned"),
                    stalled=True)


def test_times_are_rfc3339_utc_seconds() -> None:
    local = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=2)))
    assert local.hour == 16
    assert format_time(local) == "2024-05-01T14:00:00Z"
    assert yaml.safe_load(f"t: {format_time(T0)}")["t"] == T0  # YAML reads it as a timestamp
