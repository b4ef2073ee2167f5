"""The human diff of a plan, as ``lmctl gitops plan`` prints it and the sync logs it."""

from __future__ import annotations

from limen.api.resources import ORIGIN_LABEL, Kind, Origin, Resource
from limen.gitops.planfmt import MAX_VALUE_CHARS, format_value, render_plan, summary_line
from limen.services.plan import compute_plan


def role(name: str, logins: list[str], origin: Origin | None = None,
         **options: str) -> Resource:
    spec: dict[str, object] = {"allow": {"logins": logins}}
    if options:
        spec["options"] = dict(options)
    labels = {ORIGIN_LABEL: origin.value} if origin else {}
    return Resource(Kind.ROLE, name, spec=spec, labels=labels, revision=3 if origin else 0)


def test_values_are_compact_json_on_one_line() -> None:
    assert format_value(None) == "(none)"
    assert format_value(["a", "b"]) == '["a", "b"]'
    assert format_value({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    long = format_value("x" * 500)
    assert len(long) == MAX_VALUE_CHARS
    assert long.endswith("…")
    assert "\n" not in format_value("two\nlines")


def test_each_change_is_shown_with_old_and_new_values() -> None:
    current = [role("dev", ["alice"], Origin.GIT, max_session_ttl="8h"),
               role("gone", ["x"], Origin.GIT), role("same", ["y"], Origin.GIT)]
    desired = [role("dev", ["alice", "ubuntu"]), role("new", ["z"]), role("same", ["y"])]
    plan = compute_plan(desired, current, Origin.GIT, prune=True)

    assert render_plan(plan) == [
        "~ Role/dev updated",
        '    spec.allow.logins: ["alice"] → ["alice", "ubuntu"]',
        '    spec.options: {"max_session_ttl": "8h"} → (none)',
        "- Role/gone deleted",
        "+ Role/new created",
        "Plan: 1 created, 1 updated, 1 deleted, 1 unchanged",
    ]


def test_created_objects_can_list_their_fields() -> None:
    plan = compute_plan([role("new", ["z"], max_session_ttl="1h")], [], Origin.GIT, prune=True)
    assert render_plan(plan, created_fields=True) == [
        "+ Role/new created",
        '    spec.allow.logins: ["z"]',
        '    spec.options.max_session_ttl: "1h"',
        "Plan: 1 created, 0 updated, 0 deleted, 0 unchanged",
    ]


def test_conflicts_are_listed_and_counted() -> None:
    plan = compute_plan([role("dev", ["a"])], [role("dev", ["b"], Origin.API)], Origin.GIT,
                        prune=True)
    lines = render_plan(plan)
    assert lines[0] == ("! Role/dev is owned by origin api; annotate it with limen.dev/adopt: "
                        "git to hand it over")
    assert summary_line(plan) == lines[-1] == \
        "Plan: 0 created, 0 updated, 0 deleted, 0 unchanged; 1 conflict"


def test_long_plans_are_cut_with_a_count_of_what_is_left_out() -> None:
    plan = compute_plan([role(f"r{i:02d}", ["a"]) for i in range(12)], [], Origin.GIT,
                        prune=True)
    lines = render_plan(plan, max_objects=5)
    assert lines[:5] == [f"+ Role/r{i:02d} created" for i in range(5)]
    assert lines[5:] == ["… and 7 more changed objects",
                         "Plan: 12 created, 0 updated, 0 deleted, 0 unchanged"]
