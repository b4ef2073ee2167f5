"""The YAML loader's defences: links are never followed, memory is bounded while parsing.

The end-to-end attacks (``lmctl apply -f``, ``lmctl gitops plan``, a directory sync) are in
tests/security; these pin the loader's own behaviour, fast.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from limen.api import loader
from limen.api.loader import (
    MAX_DOCUMENT_NODES,
    load_path,
    load_text,
    yaml_files,
)
from limen.errors import ValidationFailed
from limen.gitops.source import DirectorySource

ROLE = "apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {{name: {name}}}\nspec: {{}}\n"
SECRET = "root:x:0:0:secret-marker:/root:/bin/bash\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """roles/ with one real role, a link to a file outside, a link to a directory outside,
    and a dangling link."""
    outside = tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    (outside / "passwd.yaml").write_text(SECRET)
    (outside / "more" / "evil.yaml").write_text(ROLE.format(name="evil"))
    root = tmp_path / "repo"
    (root / "roles").mkdir(parents=True)
    (root / "roles" / "dev.yaml").write_text(ROLE.format(name="dev"))
    os.symlink(outside / "passwd.yaml", root / "roles" / "passwd.yaml")
    os.symlink(outside / "more", root / "linked")
    os.symlink(tmp_path / "nowhere.yaml", root / "dangling.yaml")
    return root


def test_yaml_files_lists_links_apart_and_never_enters_them(tree: Path) -> None:
    found = yaml_files(tree)
    assert found.files == ["roles/dev.yaml"]
    assert found.skipped_links == ["dangling.yaml", "linked/", "roles/passwd.yaml"]


def test_load_path_skips_links_and_names_each(tree: Path) -> None:
    warnings: list[str] = []
    documents = load_path(tree, on_skipped_link=warnings.append)
    assert [d.data["metadata"]["name"] for d in documents] == ["dev"]
    assert warnings == [f"{name}: a symbolic link, skipped (links are never followed)"
                        for name in ("dangling.yaml", "linked/", "roles/passwd.yaml")]
    assert not any("secret-marker" in w or "outside" in w for w in warnings)


def test_load_path_logs_skipped_links_by_default(
        tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="limen.api.loader"):
        load_path(tree)
    assert "roles/passwd.yaml: a symbolic link, skipped" in caplog.text


def test_directory_sync_skips_links_and_warns_once(
        tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = DirectorySource(tree)
    with caplog.at_level(logging.WARNING, logger="limen.gitops.source"):
        for _ in range(2):
            documents, resources = source.load(source.poll())
    assert [r.name for r in resources] == ["dev"]
    assert len(documents) == 1
    assert caplog.text.count("roles/passwd.yaml: a symbolic link, skipped") == 1


def test_directory_sync_hash_ignores_what_links_point_to(tree: Path) -> None:
    source = DirectorySource(tree)
    before = source.poll().key
    (tree.parent / "outside" / "passwd.yaml").write_text("changed: 1\n")
    assert source.poll().key == before


def test_a_named_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(ValidationFailed, match="not a regular file"):
        load_path(tmp_path)


def test_a_non_mapping_document_is_described_not_echoed() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_text(SECRET, "passwd.yaml")
    assert "secret-marker" not in str(caught.value)
    assert "got a str value" in str(caught.value)


_FLAT_ATTACK = """
import resource, sys
from limen.api.loader import load_text
from limen.errors import ValidationFailed
text = "kind: Role\\nspec:\\n  logins: [" + ",".join(["a"] * 7_000_000) + "]\\n"
assert len(text) > 13 * 1024 * 1024
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_text(text, "flat.yaml")
except ValidationFailed as err:
    print(err)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_13_mib_flat_document_is_refused_within_a_small_memory_bound() -> None:
    # In a fresh interpreter: its peak memory is this attack's alone. Unbounded, composing
    # this document took ~3.5 GB; bounded, it stops at MAX_DOCUMENT_NODES nodes.
    result = subprocess.run([sys.executable, "-c", _FLAT_ATTACK], capture_output=True,
                            text=True, timeout=120, check=True)
    refusal, growth = result.stdout.splitlines()
    assert refusal.startswith("flat.yaml[0]: the document expands to more than "
                              f"{MAX_DOCUMENT_NODES} YAML nodes")
    assert int(growth) < 200, f"peak memory grew by {growth} MiB"


def test_billion_laughs_is_refused_while_composing() -> None:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]"
              for i in range(8)]
    with pytest.raises(ValidationFailed, match="expands to more than"):
        load_text("\n".join(lines) + "\n", "lol.yaml")


def test_the_load_budget_spans_documents_and_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_LOAD_NODES", 100)
    items = ", ".join(["x"] * 40)
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(f"kind: Role\nspec: {{logins: [{items}]}}\n")
    with pytest.raises(ValidationFailed) as caught:
        load_path(tmp_path)
    [error] = caught.value.errors
    assert error.source == "c.yaml"
    assert "more than 100 YAML nodes in one load" in error.reason


def test_a_directory_over_the_load_byte_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_LOAD_BYTES", 100)
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(ROLE.format(name=name))
    with pytest.raises(ValidationFailed, match="the files add up to more than"):
        load_path(tmp_path)
