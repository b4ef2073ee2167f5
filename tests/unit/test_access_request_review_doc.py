"""The AccessRequestReview document: parsed from Git, refused everywhere else
(limen.api.access_request_review, limen.api.validation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.api.access_request_review import (
    GIT_ONLY,
    is_review,
    parse_review,
    without_reviews,
)
from limen.api.loader import load_text
from limen.api.resources import Kind, parse_kind
from limen.api.validation import validate
from limen.errors import ValidationFailed

REQUEST_ID = "0b5c7a1e-3f4d-4c1a-9e2b-7d8f6a5b4c3d"


def review(spec: str, name: str = "review-1") -> str:
    return ("apiVersion: limen.dev/v1alpha1\nkind: AccessRequestReview\n"
            f"metadata: {{name: {name}}}\nspec:\n{spec}")


VALID = review(f"  request_id: {REQUEST_ID}\n  state: APPROVED\n  reason: INC-42 ok\n")


def test_a_valid_review_parses() -> None:
    [doc] = load_text(VALID, "reviews/x.yaml")
    assert is_review(doc)
    parsed = parse_review(doc)
    assert (parsed.name, parsed.request_id, parsed.approve, parsed.reason) == (
        "review-1", REQUEST_ID, True, "INC-42 ok")
    assert parsed.where == "reviews/x.yaml[0]"


def test_a_deny_parses() -> None:
    [doc] = load_text(review(f"  request_id: {REQUEST_ID}\n  state: DENIED\n"), "r.yaml")
    parsed = parse_review(doc)
    assert not parsed.approve
    assert parsed.reason == ""


@pytest.mark.parametrize(("spec", "field", "words"), [
    ("  request_id: not-a-uuid\n  state: APPROVED\n", "spec.request_id", "not an access"),
    (f"  request_id: {REQUEST_ID}\n  state: MAYBE\n", "spec.state", "APPROVED, DENIED"),
    (f"  request_id: {REQUEST_ID}\n", "spec.state", "required"),
    (f"  request_id: {REQUEST_ID}\n  state: APPROVED\n  reviewer: bob\n", "spec.reviewer",
     "unknown field"),
    (f"  request_id: {REQUEST_ID}\n  state: APPROVED\n  reason: [a]\n", "spec.reason",
     "expected a string"),
])
def test_malformed_reviews_name_the_field(spec: str, field: str, words: str) -> None:
    [doc] = load_text(review(spec), "reviews/bad.yaml")
    with pytest.raises(ValidationFailed) as err:
        parse_review(doc)
    [problem] = err.value.errors
    assert problem.path == field
    assert words in problem.reason
    assert problem.line is not None
    assert problem.line > 0


def test_a_review_without_spec_is_malformed() -> None:
    [doc] = load_text("apiVersion: limen.dev/v1alpha1\nkind: AccessRequestReview\n"
                      "metadata: {name: r}\n", "r.yaml")
    with pytest.raises(ValidationFailed, match="spec"):
        parse_review(doc)


def test_validate_refuses_a_review_outside_git() -> None:
    """lmctl apply, the auth API and the operator validate with ``validate``: a review there
    is refused, saying why (the reviewer is who merged, which only Git knows)."""
    docs = load_text(VALID, "review.yaml")
    with pytest.raises(ValidationFailed) as err:
        validate(docs)
    [problem] = err.value.errors
    assert problem.path == "kind"
    assert problem.reason == GIT_ONLY
    assert "merging" in GIT_ONLY
    assert "lmsh request review" in GIT_ONLY


def test_without_reviews_keeps_the_other_documents() -> None:
    role = "apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {name: dev}\nspec: {}\n"
    docs = load_text(VALID + "\n---\n" + role, "mixed.yaml")
    [kept] = without_reviews(docs)
    assert kept.data["kind"] == "Role"
    assert [r.name for r in validate(without_reviews(docs))] == ["dev"]


def test_the_kind_is_known_by_name_but_not_public() -> None:
    assert parse_kind("accessrequestreviews") is Kind.ACCESS_REQUEST_REVIEW


def test_the_example_review_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "access-request-review.yaml"
    [doc] = load_text(example.read_text(encoding="utf-8"), example.name)
    parsed = parse_review(doc)
    assert parsed.approve
    assert parsed.request_id == "0b5c6c6e-3f1e-4d7e-9b7a-4b1c8f0f2a11"
