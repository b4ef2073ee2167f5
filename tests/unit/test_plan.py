"""Apply plans: create/update/delete/unchanged, ownership between origins, adoption, pruning."""

from __future__ import annotations

from limen.api.resources import ADOPT_ANNOTATION, ORIGIN_LABEL, Kind, Origin, Resource
from limen.services.plan import Action, compute_plan


def role(
    name: str, logins: list[str], origin: Origin | None = None, **annotations: str
) -> Resource:
    labels = {ORIGIN_LABEL: origin.value} if origin else {}
    return Resource(Kind.ROLE, name, spec={"allow": {"logins": logins}}, labels=labels,
                    annotations=annotations, revision=7 if origin else 0)


def actions(plan) -> dict[str, Action]:
    return {e.key: e.action for e in plan.entries}


def test_create_update_unchanged_and_field_diff() -> None:
    current = [role("dev", ["alice"], Origin.GIT), role("ops", ["root"], Origin.GIT)]
    desired = [role("dev", ["alice", "ubuntu"]), role("ops", ["root"]), role("new", ["x"])]
    plan = compute_plan(desired, current, Origin.GIT, prune=False)
    assert actions(plan) == {"Role/dev": Action.UPDATE, "Role/ops": Action.UNCHANGED,
                             "Role/new": Action.CREATE}
    update = next(e for e in plan.entries if e.action is Action.UPDATE)
    assert [c.path for c in update.changes] == ["spec.allow.logins"]
    assert update.desired is not None
    assert update.desired.revision == 7
    assert update.desired.labels[ORIGIN_LABEL] == "git"


def test_prune_deletes_only_own_undeclared_objects() -> None:
    current = [role("gone", ["a"], Origin.GIT), role("manual", ["b"], Origin.API)]
    plan = compute_plan([], current, Origin.GIT, prune=True)
    assert actions(plan) == {"Role/gone": Action.DELETE}


def test_no_prune_without_flag() -> None:
    plan = compute_plan([], [role("gone", ["a"], Origin.GIT)], Origin.GIT, prune=False)
    assert plan.entries == ()


def test_object_of_another_origin_is_a_conflict_not_an_update() -> None:
    plan = compute_plan([role("dev", ["x"])], [role("dev", ["y"], Origin.API)], Origin.GIT,
                        prune=True)
    assert plan.changes == ()
    assert plan.conflicts
    assert "owned by origin api" in plan.conflicts[0]


def test_adoption_annotation_on_stored_object_hands_it_over() -> None:
    stored = role("dev", ["y"], Origin.API, **{ADOPT_ANNOTATION: "git"})
    plan = compute_plan([role("dev", ["x"])], [stored], Origin.GIT, prune=False)
    assert actions(plan) == {"Role/dev": Action.UPDATE}
    assert not plan.conflicts


def test_adoption_for_another_origin_does_not_count() -> None:
    stored = role("dev", ["y"], Origin.API, **{ADOPT_ANNOTATION: "kubernetes"})
    plan = compute_plan([role("dev", ["x"])], [stored], Origin.GIT, prune=False)
    assert plan.conflicts


def test_status_and_revision_of_input_are_ignored() -> None:
    stored = role("dev", ["x"], Origin.API)
    incoming = stored.replace(status={"conditions": []}, revision=99)
    plan = compute_plan([incoming], [stored], Origin.API, prune=False)
    assert actions(plan) == {"Role/dev": Action.UNCHANGED}


def test_summary_counts() -> None:
    plan = compute_plan([role("a", ["x"])], [role("b", ["y"], Origin.GIT)], Origin.GIT, prune=True)
    assert plan.summary() == "1 created, 0 updated, 1 deleted, 0 unchanged"
