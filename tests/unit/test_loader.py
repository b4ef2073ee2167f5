"""Loading YAML documents: files and trees, indexes and lines, and every error of a batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.api.loader import (
    MAX_DEPTH,
    MAX_DOCUMENT_NODES,
    MAX_FILE_BYTES,
    SourceDocument,
    load_path,
    load_text,
)
from limen.errors import BadParameter, DocumentError, ValidationFailed

ROLE = "apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {{name: {name}}}\nspec: {{}}\n"


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def errors_of(caught: pytest.ExceptionInfo[ValidationFailed]) -> list[DocumentError]:
    return caught.value.errors


def test_multi_document_file_indexes_and_start_lines() -> None:
    text = (
        "# leading comment\n"        # 1
        "a: 1\n"                     # 2  document 0
        "---\n"                      # 3
        "---\n"                      # 4  document 1 is empty: skipped but counted
        "# only a comment\n"         # 5  document 2 is empty too
        "---\n"                      # 6
        "b:\n"                       # 7  document 3
        "  - x\n"                    # 8
        "  - {c: 2}\n"               # 9
    )
    docs = load_text(text, "<stdin>")
    assert [(d.source, d.index, d.line, d.data) for d in docs] == [
        ("<stdin>", 0, 2, {"a": 1}),
        ("<stdin>", 3, 7, {"b": ["x", {"c": 2}]}),
    ]


def test_field_lines_and_nearest_ancestor_for_missing_fields() -> None:
    doc = load_text("kind: Role\nspec:\n  allow:\n    logins:\n      - a\n      - b\n", "r.yaml")[0]
    assert doc.line_of(("spec", "allow", "logins", 1)) == 6
    assert doc.line_of(("spec", "allow")) == 3
    assert doc.line_of(("spec", "allow", "node_labels", "env")) == 3  # missing: its parent
    assert doc.line_of(("nothing",)) == doc.line == 1
    assert doc.line_of(()) == 1


def test_malformed_yaml_reports_file_index_and_line() -> None:
    text = "a: 1\n---\nb: [1, 2\nc: 3\n"
    with pytest.raises(ValidationFailed) as caught:
        load_text(text, "roles/bad.yaml")
    [error] = errors_of(caught)
    assert (error.source, error.index, error.line) == ("roles/bad.yaml", 1, 4)
    assert error.reason.startswith("invalid YAML: ")
    assert str(error).startswith("roles/bad.yaml[1]: invalid YAML: ")
    assert str(error).endswith("(line 4)")


def test_every_bad_file_of_a_tree_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "roles/good.yaml", ROLE.format(name="good"))
    write(tmp_path, "roles/bad.yaml", "a: [\n")
    write(tmp_path, "users/list.yaml", "- not\n- a mapping\n")
    write(tmp_path, "users/dup.yaml", "kind: User\nspec: {}\nkind: Role\n")
    with pytest.raises(ValidationFailed) as caught:
        load_path(tmp_path)
    found = [(e.source, e.index, e.line, e.reason) for e in errors_of(caught)]
    assert [f[0] for f in found] == ["roles/bad.yaml", "users/dup.yaml", "users/list.yaml"]
    assert found[1] == ("users/dup.yaml", 0, 3, "duplicate key 'kind' (first at line 1)")
    assert found[2] == (
        "users/list.yaml", 0, 1, "expected a mapping (apiVersion, kind, metadata, spec), got a list"
    )


def test_directory_walk_is_sorted_recursive_and_skips_hidden_and_kustomization(
    tmp_path: Path,
) -> None:
    write(tmp_path, "b.yml", ROLE.format(name="b"))
    write(tmp_path, "a/z.yaml", ROLE.format(name="z"))
    write(tmp_path, "a/kustomization.yaml", "resources: [z.yaml]\n")
    write(tmp_path, "kustomization.yml", "resources: [b.yml]\n")
    write(tmp_path, ".git/config.yaml", "{not: yaml: at: all\n")
    write(tmp_path, ".github/workflows/ci.yaml", "on: push\n")
    write(tmp_path, "a/.hidden.yaml", "x: [\n")
    write(tmp_path, "README.md", "# not yaml\n")
    write(tmp_path, "a/notes.txt", "a: [\n")
    docs = load_path(tmp_path)
    assert [(d.source, d.data["metadata"]["name"]) for d in docs] == [("a/z.yaml", "z"),
                                                                       ("b.yml", "b")]


def test_single_file_source_is_the_path_as_given(tmp_path: Path) -> None:
    path = write(tmp_path, "roles/dev.yaml", ROLE.format(name="dev"))
    [doc] = load_path(str(path))
    assert doc.source == str(path)
    assert isinstance(doc, SourceDocument)


def test_kustomization_file_given_explicitly_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "kustomization.yaml", "resources: [a.yaml]\n")
    assert load_path(path)[0].data == {"resources": ["a.yaml"]}


def test_missing_path_is_a_bad_parameter(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match="no such file or directory"):
        load_path(tmp_path / "absent")


def test_empty_file_and_empty_directory_give_no_documents(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert load_path(tmp_path) == []
    assert load_path(tmp_path / "empty.yaml") == []


def test_undecodable_file_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValidationFailed) as caught:
        load_path(tmp_path)
    [error] = errors_of(caught)
    assert error.source == "latin1.yaml"
    assert error.reason.startswith("cannot read the file: ")


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes("\ufeffa: 1\n".encode())
    assert load_path(tmp_path)[0].data == {"a": 1}


def test_python_tags_are_refused_by_the_safe_loader() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_text("a: !!python/object/apply:os.system ['true']\n", "evil.yaml")
    [error] = errors_of(caught)
    assert error.line == 1
    assert "could not determine a constructor" in error.reason


def test_timestamps_stay_strings_as_kubernetes_sees_them() -> None:
    [doc] = load_text("a: 2024-01-01\nb: 2024-01-01T10:00:00Z\n", "t.yaml")
    assert doc.data == {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z"}


def test_merge_keys_and_plain_aliases_work() -> None:
    [doc] = load_text("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\nd: *b\n", "m.yaml")
    assert doc.data["c"] == {"x": 1, "y": 2}
    assert doc.data["d"] == {"x": 1}


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    with pytest.raises(ValidationFailed) as caught:
        load_text("\n".join(lines) + "\n", "bomb.yaml")
    [error] = errors_of(caught)
    assert error.reason == (
        f"the document expands to more than {MAX_DOCUMENT_NODES} YAML nodes (aliases?)"
    )


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_text("a: &x\n  b: *x\n", "loop.yaml")
    assert errors_of(caught)[0].reason == "a YAML alias refers to itself"


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    load_text("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n", "ok.yaml")
    for depth in (MAX_DEPTH + 1, 20000):  # our limit; libyaml's own
        with pytest.raises(ValidationFailed) as caught:
            load_text("a: " + "[" * depth + "]" * depth + "\n", "deep.yaml")
        [error] = errors_of(caught)
        assert "nest" in error.reason, error.reason


def test_oversized_input_is_refused_before_parsing(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ValidationFailed) as caught:
        load_path(tmp_path)
    found = [(e.source, e.reason) for e in errors_of(caught)]
    assert found == [("huge.yaml", "larger than 16 MiB")]
    with pytest.raises(ValidationFailed):
        load_text("#" * (MAX_FILE_BYTES + 1), "<stdin>")
