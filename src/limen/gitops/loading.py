"""Parse and validate a commit's files, reusing what is known of the files that did not change.

A file is identified by its path and its Git blob id (its content), so the result of parsing
and validating it is the same at every commit that holds it. ``ValidatedFiles`` keeps those
results for the files of the last commit loaded; loading the next commit parses and validates
only the files that changed (a one-line change in a 10,000-object repository validates one
file, not 10,000).

The outcome is exactly ``validate(every document)``: each document's checks depend on that
document alone, except duplicates across the batch, which are checked over the whole commit.
When any file is invalid or a name is declared twice, the whole batch goes through
``validate`` once more, so the errors are worded and ordered as ``lmctl gitops plan`` prints
them. Review documents (``AccessRequestReview``) are kept among the documents but never
validated as objects: the sync reviews them apart (``limen.gitops.reviews``). Called by
``limen.gitops.source`` in the sync's worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from limen.api.access_request_review import without_reviews
from limen.api.loader import SourceDocument
from limen.api.resources import Resource
from limen.api.validation import validate
from limen.errors import DocumentError, ValidationFailed
from limen.gitops.repository import File, parse_file

__all__ = ["ValidatedFiles"]


@dataclass(frozen=True)
class _Result:
    documents: tuple[SourceDocument, ...]
    resources: tuple[Resource, ...] | None
    """None when a document of the file is invalid."""
    load_errors: tuple[DocumentError, ...] = ()


class ValidatedFiles:
    """The parse and validation results of the last loaded commit's files."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], _Result] = {}

    def __len__(self) -> int:
        return len(self._results)

    def load(self, files: Sequence[File]) -> tuple[list[SourceDocument], list[Resource]]:
        """Every document and, when all are valid, every Resource (else ``ValidationFailed``
        with every error, as ``validate`` reports them)."""
        results = {(f.path, f.blob): self._results.get((f.path, f.blob)) or _check(f)
                   for f in files}
        self._results = results
        documents = [d for r in results.values() for d in r.documents]
        load_errors = [e for r in results.values() for e in r.load_errors]
        if load_errors:
            raise ValidationFailed(load_errors)
        resources: list[Resource] = []
        seen: set[tuple[str, str]] = set()
        for result in results.values():
            if result.resources is None:
                return documents, validate(without_reviews(documents))  # raises, all errors
            for resource in result.resources:
                identity = (resource.kind.value, resource.name)
                if identity in seen:
                    return documents, validate(without_reviews(documents))  # a duplicate
                seen.add(identity)
                resources.append(resource)
        return documents, resources


def _check(file: File) -> _Result:
    try:
        documents = tuple(parse_file(file))
    except ValidationFailed as err:
        return _Result((), None, tuple(err.errors))
    try:
        return _Result(documents, tuple(validate(without_reviews(documents))))
    except ValidationFailed:
        return _Result(documents, None)
