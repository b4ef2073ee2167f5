"""Loading a commit's files with the per-file cache: the same outcome as validating every
document, but only changed files are parsed and validated again."""

from __future__ import annotations

import hashlib

import pytest

from gitops_git import role
from limen.api.loader import load_text
from limen.api.validation import validate
from limen.errors import ValidationFailed
from limen.gitops import loading
from limen.gitops.loading import ValidatedFiles
from limen.gitops.repository import File

DUPLICATE = role("dev", "again")
BROKEN = "kind: [unclosed\n"
INVALID = role("bad", "x").replace("logins: [x]", "logins: x")


def file(path: str, text: str) -> File:
    return File(path, hashlib.sha256(text.encode()).hexdigest()[:40], text.encode())


def every_document(files: list[File]) -> list:
    return [d for f in files for d in load_text(f.data.decode(), f.path)]


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = loading.parse_file

    def counting(f: File) -> list:
        calls.append(f.path)
        return original(f)

    monkeypatch.setattr(loading, "parse_file", counting)
    return calls


def test_only_changed_files_are_parsed_again(parsed: list[str]) -> None:
    files = [file(f"roles/r{i}.yaml", role(f"r{i}", f"l{i}")) for i in range(5)]
    cache = ValidatedFiles()
    documents, resources = cache.load(files)
    assert len(parsed) == 5
    assert resources == validate(every_document(files))
    assert documents == every_document(files)

    files[2] = file("roles/r2.yaml", role("r2", "changed"))
    files.append(file("roles/moved.yaml", role("r0", "l0")))  # r0's content under a new path
    del files[0]
    parsed.clear()
    documents, resources = cache.load(files)

    assert parsed == ["roles/r2.yaml", "roles/moved.yaml"]
    assert resources == validate(every_document(files))
    assert [d.source for d in documents] == [f.path for f in files]
    assert len(cache) == 5


@pytest.mark.parametrize("bad", [INVALID, DUPLICATE])
def test_errors_are_those_of_validating_every_document(bad: str) -> None:
    files = [file("roles/dev.yaml", role("dev", "alice")), file("roles/x.yaml", bad)]
    cache = ValidatedFiles()
    with pytest.raises(ValidationFailed) as cached:
        cache.load(files)
    with pytest.raises(ValidationFailed) as direct:
        validate(every_document(files))
    assert cached.value.errors == direct.value.errors
    with pytest.raises(ValidationFailed) as again:  # from the cache, the same answer
        cache.load(files)
    assert again.value.errors == direct.value.errors


def test_files_that_cannot_be_loaded_are_reported_before_validation() -> None:
    files = [file("roles/broken.yaml", BROKEN), file("roles/x.yaml", INVALID),
             File("roles/latin1.yaml", "0" * 40, "name: caf\xe9\n".encode("latin-1"))]
    with pytest.raises(ValidationFailed) as raised:
        ValidatedFiles().load(files)
    assert [e.source for e in raised.value.errors] == ["roles/broken.yaml", "roles/latin1.yaml"]
    assert "cannot read the file" in raised.value.errors[1].reason
