"""limen.errors.DocumentError: a value (equal and hashable by its fields), immutable, and
printed as ``file[index] path: reason (line N)``."""

from __future__ import annotations

import pytest

from limen.errors import DocumentError, ValidationFailed


def test_equal_by_value_and_hashable() -> None:
    one = DocumentError("roles.yaml", 0, "spec.allow", "bad", line=3)
    assert one == DocumentError(source="roles.yaml", index=0, path="spec.allow", reason="bad",
                                line=3)
    assert one != DocumentError("roles.yaml", 0, "spec.allow", "bad")
    assert len({one, DocumentError("roles.yaml", 0, "spec.allow", "bad", 3)}) == 1
    assert "line=3" in repr(one)


def test_immutable() -> None:
    with pytest.raises(AttributeError, match="immutable"):
        DocumentError("a", 0, "", "r").reason = "other"  # type: ignore[misc]


def test_printed_as_the_architecture_document_says() -> None:
    assert str(DocumentError("roles.yaml", 2, "spec.allow", "bad", line=7)) == (
        "roles.yaml[2] spec.allow: bad (line 7)")
    assert str(DocumentError("roles.yaml", 2, "", "not a mapping")) == (
        "roles.yaml[2]: not a mapping")
    assert str(ValidationFailed([DocumentError("a", 0, "", "x"), DocumentError("b", 1, "p", "y")])
               ) == "a[0]: x\nb[1] p: y"
