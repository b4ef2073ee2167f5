"""The ``AccessRequestReview`` kind: approving or denying an access request by merging a commit.

A review committed to the synced Git branch (``reviews/<request id>.yaml``)::

    apiVersion: limen.dev/v1alpha1
    kind: AccessRequestReview
    metadata: {name: review-<request id>}
    spec: {request_id: <request id>, state: APPROVED|DENIED, reason: "INC-42: ok"}

It is accepted only from the Git sync. The reviewer is not in the document: it is whoever
merged the commit that brought the document to the branch (``limen.gitops.reviews``), which
only Git knows. ``lmctl apply``, the auth API and Kubernetes (there is no CRD) refuse it with
:data:`GIT_ONLY`; a review by command is ``lmsh request review ID --approve|--deny``.

Review documents are not stored objects: the sync takes them out of a commit's documents
(:func:`is_review`, :func:`without_reviews`) before the others are validated and applied,
checks each with :func:`parse_review` and turns a valid one into a review of the request.
Pure; used by ``limen.api.validation``, ``limen.gitops.loading``/``source``/``reviews`` and
``lmctl gitops plan``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from limen.api.access_request import MAX_REASON, check_request_id
from limen.api.loader import FieldPath, SourceDocument
from limen.api.resources import API_VERSION, NAME_PATTERN
from limen.api.secret_scan import find_secrets
from limen.errors import BadParameter, DocumentError, ValidationFailed

__all__ = [
    "GIT_ONLY",
    "REVIEW_KIND",
    "SPEC_FIELDS",
    "STATES",
    "ReviewDocument",
    "is_review",
    "parse_review",
    "without_reviews",
]

REVIEW_KIND = "AccessRequestReview"
GIT_ONLY = (f"{REVIEW_KIND} documents are accepted only from the Git sync: a review in Git is "
            "made by merging it, and the reviewer is who merged the commit, which only Git "
            "knows. To review by command: lmsh request review ID --approve|--deny")
STATES = ("APPROVED", "DENIED")
SPEC_FIELDS = ("request_id", "state", "reason")


@dataclass(frozen=True)
class ReviewDocument:
    """A valid review document and where it was declared."""

    name: str
    request_id: str
    approve: bool
    reason: str
    source: str
    """The file, relative to the synced directory (``reviews/<id>.yaml``)."""
    index: int

    @property
    def where(self) -> str:
        return f"{self.source}[{self.index}]"


def is_review(doc: SourceDocument) -> bool:
    """Does ``doc`` declare an ``AccessRequestReview`` (valid or not)?"""
    return isinstance(doc.data, dict) and doc.data.get("kind") == REVIEW_KIND


def without_reviews(docs: Sequence[SourceDocument]) -> list[SourceDocument]:
    """``docs`` without review documents: what is validated and applied as objects."""
    return [doc for doc in docs if not is_review(doc)]


def parse_review(doc: SourceDocument) -> ReviewDocument:
    """The review ``doc`` declares, or ``ValidationFailed`` naming every problem (file, field,
    line), as ``limen.api.validation`` reports the other kinds."""
    problems = list(_problems(doc.data))
    if problems:
        raise ValidationFailed([
            DocumentError(doc.source, doc.index, ".".join(str(p) for p in path), reason,
                          doc.line_of(path)) for path, reason in problems])
    spec = doc.data["spec"]
    return ReviewDocument(doc.data["metadata"]["name"], spec["request_id"],
                          spec["state"] == "APPROVED", (spec.get("reason") or "").strip(),
                          doc.source, doc.index)


def _problems(data: Any) -> Iterator[tuple[FieldPath, str]]:
    if data.get("apiVersion") != API_VERSION:
        yield ("apiVersion",), f"expected {API_VERSION!r}"
    for found in find_secrets(data):
        yield found.path, found.reason
    for key in data:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            yield (str(key),), "unknown field (a review has apiVersion, kind, metadata, spec)"
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        yield ("metadata", "name"), "required: a name (lowercase letters, digits, '.', '-')"
    spec = data.get("spec")
    if not isinstance(spec, dict):
        yield ("spec",), "required: a mapping with request_id, state and reason"
        return
    for key in spec:
        if key not in SPEC_FIELDS:
            yield ("spec", str(key)), f"unknown field (known: {', '.join(SPEC_FIELDS)})"
    try:
        check_request_id(spec.get("request_id"))  # type: ignore[arg-type]
    except BadParameter as err:
        yield ("spec", "request_id"), f"required: the access request's id ({err})"
    if spec.get("state") not in STATES:
        yield ("spec", "state"), f"required: one of {', '.join(STATES)}"
    reason = spec.get("reason", "")
    if reason is not None and not isinstance(reason, str):
        yield ("spec", "reason"), "expected a string"
    elif reason and (len(reason) > MAX_REASON
                     or any(ord(c) < 32 and c != "\t" for c in reason.strip())):
        yield ("spec", "reason"), f"one line of at most {MAX_REASON} characters"
