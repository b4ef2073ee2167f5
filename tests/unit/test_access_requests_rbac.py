"""The access request rules of roles (``limen.rbac.access_requests``) and their validation:
``allow.request`` / ``allow.review_requests``, globs and ``^...$`` patterns, deny wins, the
smallest ``max_duration``, broken patterns fail closed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Resource
from limen.api.validation import validate
from limen.errors import ValidationFailed
from limen.rbac.access_requests import check_request, check_review


def role(name: str, allow: dict[str, Any] | None = None,
         deny: dict[str, Any] | None = None) -> Resource:
    spec: dict[str, Any] = {}
    if allow:
        spec["allow"] = allow
    if deny:
        spec["deny"] = deny
    return Resource(Kind.ROLE, name, spec=spec)


def test_a_listed_role_may_be_requested_and_gets_the_smallest_max_duration() -> None:
    roles = [role("a", {"request": {"roles": ["db-admin"], "max_duration": "2h"}}),
             role("b", {"request": {"roles": ["db-*"], "max_duration": "30m"}}),
             role("c", {"request": {"roles": ["^web-(x|y)$"]}})]
    answer = check_request(roles, ["db-admin"])
    assert answer.allowed
    assert answer.max_duration == timedelta(minutes=30)
    assert check_request(roles, ["web-x"]).allowed
    assert check_request(roles, ["web-x"]).max_duration is None
    assert check_request(roles, ["db-admin", "web-y"]).max_duration == timedelta(minutes=30)


def test_a_role_no_role_allows_is_refused_and_named() -> None:
    roles = [role("a", {"request": {"roles": ["db-*"]}})]
    answer = check_request(roles, ["db-admin", "root"])
    assert not answer.allowed
    assert answer.decision.reason == "no role allows requesting role 'root'"
    assert not check_request(roles, []).allowed
    assert not check_request([role("x", {"logins": ["a"]})], ["db-admin"]).allowed


def test_deny_wins_over_allow_in_any_role() -> None:
    roles = [role("a", {"request": {"roles": ["*"]}}),
             role("b", deny={"request": {"roles": ["^prod-.*$"]}})]
    assert check_request(roles, ["dev"]).allowed
    refused = check_request(roles, ["prod-admin"]).decision
    assert not refused.allowed
    assert refused.role == "b"
    assert refused.rule == "deny.request.roles"


def test_a_broken_pattern_grants_nothing_and_a_broken_deny_denies_everything() -> None:
    broken_allow = [role("a", {"request": {"roles": ["^(db$"]}})]
    assert not check_request(broken_allow, ["db"]).allowed
    broken_deny = [role("a", {"request": {"roles": ["*"]}}),
                   role("b", deny={"request": {"roles": ["^(x$"]}})]
    refused = check_request(broken_deny, ["dev"]).decision
    assert not refused.allowed
    assert "denies everything" in refused.reason


def test_review_needs_every_requested_role_covered() -> None:
    reviewer = [role("r", {"review_requests": {"roles": ["db-*"]}})]
    assert check_review(reviewer, ["db-admin", "db-read"]).allowed
    assert not check_review(reviewer, ["db-admin", "ops"]).allowed
    assert not check_review([role("x", {"request": {"roles": ["*"]}})], ["db-admin"]).allowed
    denied = [*reviewer, role("d", deny={"review_requests": {"roles": ["db-admin"]}})]
    assert not check_review(denied, ["db-admin"]).allowed


def _doc(spec: dict[str, Any]) -> list[SourceDocument]:
    return [SourceDocument("role.yaml", 0, 1, {
        "apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "r"},
        "spec": spec})]


def test_the_role_schema_takes_the_fields_and_rejects_mistakes() -> None:
    spec = {"allow": {"request": {"roles": ["db-admin", "^ops-.*$"], "max_duration": "1h"},
                      "review_requests": {"roles": ["db-*"]}},
            "deny": {"request": {"roles": ["root"]}, "review_requests": {"roles": ["root"]}}}
    [resource] = validate(_doc(spec))
    assert resource.spec == spec
    for bad, why in (
        ({"allow": {"request": {"roles": ["db"], "max_duration": "1 hour"}}}, "duration"),
        ({"allow": {"request": {"roles": ["^(db$"]}}}, "not a valid regular expression"),
        ({"allow": {"request": {"role": ["db"]}}}, "role"),
        ({"deny": {"request": {"roles": ["db"], "max_duration": "1h"}}}, "max_duration"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            validate(_doc(bad))
        assert why in str(caught.value), (bad, str(caught.value))


def test_a_review_document_is_not_an_object_to_apply() -> None:
    """The reviewer is who merged, which only the Git sync knows (docs/access-requests.md):
    validation (lmctl apply, the API, the operator) refuses a review document."""
    document = {"apiVersion": "limen.dev/v1alpha1", "kind": "AccessRequestReview",
                "metadata": {"name": "r"}, "spec": {"request_id": "x", "state": "approved"}}
    with pytest.raises(ValidationFailed, match="accepted only from the Git sync"):
        validate([SourceDocument("review.yaml", 0, 1, document)])
