"""Read YAML resource documents from files, directories and text, with their locations.

``load_path`` walks a file or a directory (recursively, sorted, hidden entries and
``kustomization.yaml`` skipped) and ``load_text`` parses one stream (stdin, an API body). Both
return :class:`SourceDocument` objects — the parsed mapping plus where it came from: the source
name, the document's index in its file and the line of every field, so that validation errors
read ``roles/dev.yaml[1] (line 7) spec.allow.logins: ...``. Every unreadable file, malformed
document and non-mapping document of a batch is reported together in one
:class:`~limen.errors.ValidationFailed`.

YAML is parsed with PyYAML's safe loader only (no Python objects), timestamps stay strings (as
Kubernetes sees them), duplicate keys are errors (as in ``kubectl``), and alias bombs and
recursive aliases are refused before anything walks the data.

Called by ``lmctl apply`` / ``lmctl gitops plan``, the Git sync and the auth API, before
``limen.api.validation.validate``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from limen.errors import BadParameter, DocumentError, ValidationFailed

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_NODES",
    "MAX_FILE_BYTES",
    "FieldPath",
    "SourceDocument",
    "load_path",
    "load_text",
]

FieldPath = tuple[str | int, ...]
"""A field's location in a document: mapping keys and list indexes, e.g. ``("spec", "x", 0)``."""

MAX_DOCUMENT_NODES = 200_000
"""Largest document accepted, counted in YAML nodes after expanding aliases."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a document."""
MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest file (or text) accepted."""

_TOO_LARGE = f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"
_SKIPPED_FILES = frozenset({"kustomization.yaml", "kustomization.yml"})
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SourceDocument:
    """One YAML document and where it came from."""

    source: str
    """Where the document was read: a path relative to the loaded directory, the path as given
    for a single file, or a caller-chosen name such as ``<stdin>``."""
    index: int
    """0-based position of the document in its file (empty documents count)."""
    line: int
    """1-based line where the document's content starts."""
    data: dict[str, Any]
    """The parsed mapping."""
    lines: Mapping[FieldPath, int] = field(default_factory=dict, compare=False, repr=False)
    """1-based line of each field (mapping keys and list items) found in the YAML."""

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of ``path``, or of its nearest ancestor the YAML shows (missing fields)."""
        parts = tuple(path)
        while parts:
            line = self.lines.get(parts)
            if line is not None:
                return line
            parts = parts[:-1]
        return self.line


def load_text(text: str, source: str) -> list[SourceDocument]:
    """Parse a multi-document YAML stream; raises ValidationFailed listing every problem."""
    if len(text) > MAX_FILE_BYTES:
        raise ValidationFailed([DocumentError(source, 0, "", _TOO_LARGE)])
    documents, errors = _parse(text, source)
    if errors:
        raise ValidationFailed(errors)
    return documents


def load_path(path: str | os.PathLike[str]) -> list[SourceDocument]:
    """Load one file, or every ``*.yaml``/``*.yml`` under a directory, in sorted order.

    Raises :class:`BadParameter` when ``path`` does not exist and :class:`ValidationFailed`
    listing every unreadable file and malformed document otherwise.
    """
    root = Path(path)
    if root.is_file():
        files = [(root, os.fspath(path))]
    elif root.is_dir():
        files = [(root / name, name) for name in _yaml_files(root)]
    else:
        raise BadParameter(f"{os.fspath(path)}: no such file or directory")
    documents: list[SourceDocument] = []
    errors: list[DocumentError] = []
    for file, source in files:
        try:
            if file.stat().st_size > MAX_FILE_BYTES:
                errors.append(DocumentError(source, 0, "", _TOO_LARGE))
                continue
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            errors.append(DocumentError(source, 0, "", f"cannot read the file: {reason}"))
            continue
        found, problems = _parse(text, source)
        documents.extend(found)
        errors.extend(problems)
    if errors:
        raise ValidationFailed(errors)
    return documents


def _yaml_files(root: Path) -> list[str]:
    """Relative POSIX paths of the YAML files under ``root``, hidden entries skipped."""
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        base = Path(directory).relative_to(root)
        for name in names:
            if name.startswith(".") or name in _SKIPPED_FILES or not name.endswith(_SUFFIXES):
                continue
            found.append((base / name).as_posix())
    return sorted(found)


try:  # libyaml's parser: the same safe constructor, several times faster
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class _SafeLoader(_BaseLoader):
    """PyYAML's safe loader, with timestamps kept as the strings they are written as."""


def _timestamp_as_text(loader: _SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_SafeLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _parse(text: str, source: str) -> tuple[list[SourceDocument], list[DocumentError]]:
    documents: list[SourceDocument] = []
    errors: list[DocumentError] = []
    loader = _SafeLoader(text)
    index = 0
    anchors = "&" in text  # without an anchor there is no alias: nodes are a plain tree
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                document, error = _document(loader, node, source, index, anchors)
                if document is not None:
                    documents.append(document)
                if error is not None:
                    errors.append(error)
            index += 1
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        reason = f"invalid YAML: {err.problem or err.context}"
        if err.context and err.problem:
            reason += f" ({err.context})"
        errors.append(DocumentError(source, index, "", reason, mark.line + 1 if mark else None))
    except yaml.YAMLError as err:
        errors.append(DocumentError(source, index, "", f"invalid YAML: {err}"))
    except RecursionError:
        errors.append(DocumentError(source, index, "", "invalid YAML: nested too deeply"))
    finally:
        loader.dispose()
    return documents, errors


def _document(
    loader: _SafeLoader, node: yaml.Node, source: str, index: int, anchors: bool = True
) -> tuple[SourceDocument | None, DocumentError | None]:
    line = node.start_mark.line + 1
    lines: dict[FieldPath, int] = {}
    problem = _index_lines(node, (), lines, set()) or (
        _expanded_size_problem(node) if anchors else _tree_size_problem(node))
    if problem is not None:
        reason, at = problem
        return None, DocumentError(source, index, "", reason, at)
    data = loader.construct_document(node)
    if data is None:  # an empty document (only comments, or nothing between two ---)
        return None, None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else repr(data)
        reason = f"expected a mapping (apiVersion, kind, metadata, spec), got {kind}"
        return None, DocumentError(source, index, "", reason, line)
    return SourceDocument(source, index, line, data, lines), None


def _index_lines(
    node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], seen: set[int]
) -> tuple[str, int] | None:
    """Record the line of every field; report the first duplicate key or too deep a nesting."""
    if id(node) in seen:  # an alias: its fields were indexed where the anchor is
        return None
    if len(path) > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep", node.start_mark.line + 1
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value
            key_line = key_node.start_mark.line + 1
            if key in first:
                return f"duplicate key {key!r} (first at line {first[key]})", key_line
            first[key] = key_line
            lines[(*path, key)] = key_line
            problem = _index_lines(value_node, (*path, key), lines, seen)
            if problem is not None:
                return problem
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            lines[(*path, position)] = item.start_mark.line + 1
            problem = _index_lines(item, (*path, position), lines, seen)
            if problem is not None:
                return problem
    return None


def _expanded_size_problem(root: yaml.Node) -> tuple[str, int] | None:
    """Refuse documents whose aliases expand past MAX_DOCUMENT_NODES, or refer to themselves."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Recursive(node.start_mark.line + 1)
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1 + sum(size(child) for child in children)
        active.discard(key)
        sizes[key] = min(total, MAX_DOCUMENT_NODES + 1)
        return sizes[key]

    try:
        total = size(root)
    except _Recursive as err:
        return "a YAML alias refers to itself", err.line
    if total > MAX_DOCUMENT_NODES:
        return (
            f"the document expands to more than {MAX_DOCUMENT_NODES} YAML nodes (aliases?)",
            root.start_mark.line + 1,
        )
    return None


def _tree_size_problem(root: yaml.Node) -> tuple[str, int] | None:
    """The size limit for a document without aliases (a tree): a plain count, ~5x cheaper
    than :func:`_expanded_size_problem` (what a 10,000-file Git sync spends most on)."""
    total, stack = 0, [root]
    while stack:
        node = stack.pop()
        total += 1
        if total > MAX_DOCUMENT_NODES:
            return (
                f"the document expands to more than {MAX_DOCUMENT_NODES} YAML nodes (aliases?)",
                root.start_mark.line + 1,
            )
        if isinstance(node, yaml.MappingNode):
            for pair in node.value:
                stack.extend(pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return None


class _Recursive(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line
