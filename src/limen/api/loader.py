"""Read YAML resource documents from files, directories and text, with their locations.

``load_path`` walks a file or a directory (recursively, sorted, hidden entries and
``kustomization.yaml`` skipped) and ``load_text`` parses one stream (stdin, an API body). Both
return :class:`SourceDocument` objects — the parsed mapping plus where it came from: the source
name, the document's index in its file and the line of every field, so that validation errors
read ``roles/dev.yaml[1] (line 7) spec.allow.logins: ...``. Every unreadable file, malformed
document and non-mapping document of a batch is reported together in one
:class:`~limen.errors.ValidationFailed`.

Symbolic links below a directory are never followed (a link committed to an access repository
could point anywhere on the disk of whoever reads it; the Git sync ignores links too): they are
skipped and named to ``on_skipped_link``, never read. :func:`yaml_files` is that one walk,
shared by ``lmctl apply -f``, ``lmctl gitops plan`` and the sync of a plain directory.

YAML is parsed with PyYAML's safe loader only (no Python objects), timestamps stay strings (as
Kubernetes sees them), duplicate keys are errors (as in ``kubectl``). Memory is bounded while
parsing, not after: the composer counts every node as it builds it, an alias counting as the
whole subtree it repeats, and stops a document past ``MAX_DOCUMENT_NODES`` nodes or
``MAX_DEPTH`` levels, and a load (a text, a file, a directory) past ``MAX_LOAD_NODES``. Files
are refused past ``MAX_FILE_BYTES`` and a directory past ``MAX_LOAD_BYTES`` before they are
parsed. Alias bombs ("billion laughs") and recursive aliases are refused the same way.

Called by ``lmctl apply`` / ``lmctl gitops plan``, the Git sync and the auth API, before
``limen.api.validation.validate``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from limen.errors import BadParameter, DocumentError, ValidationFailed

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_NODES",
    "MAX_FILE_BYTES",
    "MAX_LOAD_BYTES",
    "MAX_LOAD_NODES",
    "FieldPath",
    "SourceDocument",
    "YamlFiles",
    "load_path",
    "load_text",
    "skipped_link_message",
    "yaml_files",
]

log = logging.getLogger(__name__)

FieldPath = tuple[str | int, ...]
"""A field's location in a document: mapping keys and list indexes, e.g. ``("spec", "x", 0)``."""

MAX_DOCUMENT_NODES = 200_000
"""Largest document accepted, counted in YAML nodes after expanding aliases."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a document."""
MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest file (or text) accepted."""
MAX_LOAD_BYTES = 64 * 1024 * 1024
"""Largest sum of file sizes one load (``lmctl apply -f DIR``, one sync of a directory)."""
MAX_LOAD_NODES = 1_000_000
"""Most YAML nodes (aliases expanded) one load parses over all its documents and files."""

_SKIPPED_FILES = frozenset({"kustomization.yaml", "kustomization.yml"})
_SUFFIXES = (".yaml", ".yml")


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB"


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
        too_large = f"larger than {_mib(MAX_FILE_BYTES)}"
        raise ValidationFailed([DocumentError(source, 0, "", too_large)])
    documents, errors = _parse(text, source, _Budget())
    if errors:
        raise ValidationFailed(errors)
    return documents


# -- directories ------------------------------------------------------------------------------

@dataclass(frozen=True)
class YamlFiles:
    """What :func:`yaml_files` found under a directory."""

    files: list[str]
    """Relative POSIX paths of the YAML files to read, sorted."""
    skipped_links: list[str]
    """Relative POSIX paths of the symbolic links skipped — to a file or dangling (YAML names
    only), or to a directory (ending with ``/``) — sorted."""


def yaml_files(root: Path) -> YamlFiles:
    """The ``*.yaml``/``*.yml`` files under ``root`` (recursive) as every reader of a directory
    sees them: hidden entries and ``kustomization.yaml`` skipped, symbolic links never
    followed. ``root`` itself may be a link: whoever names it chose it."""
    files: list[str] = []
    links: list[str] = []
    for directory, subdirs, names in os.walk(root, followlinks=False):
        base = Path(directory).relative_to(root)
        kept: list[str] = []
        for name in subdirs:
            if name.startswith("."):
                continue
            if os.path.islink(os.path.join(directory, name)):
                links.append((base / name).as_posix() + "/")
            else:
                kept.append(name)
        subdirs[:] = sorted(kept)
        for name in names:
            if name.startswith(".") or name in _SKIPPED_FILES or not name.endswith(_SUFFIXES):
                continue
            relative = (base / name).as_posix()
            if os.path.islink(os.path.join(directory, name)):
                links.append(relative)
            else:
                files.append(relative)
    return YamlFiles(sorted(files), sorted(links))


def skipped_link_message(relative: str) -> str:
    """The warning for a skipped link: its name only, never where it points or what it holds."""
    return f"{relative}: a symbolic link, skipped (links are never followed)"


def _log_skipped_link(message: str) -> None:
    log.warning("%s", message)


def load_path(path: str | os.PathLike[str], *,
              on_skipped_link: Callable[[str], None] | None = None) -> list[SourceDocument]:
    """Load one file, or every ``*.yaml``/``*.yml`` under a directory, in sorted order.

    Symbolic links below a directory are skipped; each is reported to ``on_skipped_link`` as
    one sentence naming it (default: a warning in the log). Raises :class:`BadParameter` when
    ``path`` does not exist and :class:`ValidationFailed` listing every unreadable file and
    malformed document otherwise.
    """
    root = Path(path)
    files: list[tuple[Path, str, bool]]
    if root.is_dir():
        found = yaml_files(root)
        report = on_skipped_link or _log_skipped_link
        for link in found.skipped_links:
            report(skipped_link_message(link))
        files = [(root / name, name, True) for name in found.files]
    elif root.exists():
        files = [(root, os.fspath(path), False)]
    else:
        raise BadParameter(f"{os.fspath(path)}: no such file or directory")
    documents: list[SourceDocument] = []
    errors: list[DocumentError] = []
    budget = _Budget()
    total = 0
    for file, source, below_root in files:
        try:
            data = _read_regular(file, no_follow=below_root)
        except _Unreadable as err:
            errors.append(DocumentError(source, 0, "", err.reason))
            continue
        total += len(data)
        if total > MAX_LOAD_BYTES:
            errors.append(DocumentError(source, 0, "", "the files add up to more than "
                                                       f"{_mib(MAX_LOAD_BYTES)}: split the change"))
            break
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            errors.append(DocumentError(source, 0, "", f"cannot read the file: {err}"))
            continue
        found_documents, problems = _parse(text, source, budget)
        documents.extend(found_documents)
        errors.extend(problems)
        if budget.exhausted:
            break
    if errors:
        raise ValidationFailed(errors)
    return documents


class _Unreadable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_regular(file: Path, *, no_follow: bool) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES, read through one descriptor.

    ``no_follow``: refuse a file that became a symbolic link since its directory was listed.
    Never blocks on a FIFO, never reads a device."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if no_follow else 0)
    try:
        fd = os.open(file, flags)
    except OSError as err:
        raise _Unreadable(f"cannot read the file: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise _Unreadable(f"larger than {_mib(MAX_FILE_BYTES)}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_FILE_BYTES:  # it grew while being read
                raise _Unreadable(f"larger than {_mib(MAX_FILE_BYTES)}")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise _Unreadable(f"cannot read the file: {err.strerror or err}") from None
    finally:
        os.close(fd)


# -- parsing ----------------------------------------------------------------------------------

try:  # libyaml's parser (the events); nodes are composed in Python to count them as they come
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.loader import SafeLoader as _Parser  # type: ignore[assignment]  # Python's parser


class _Budget:
    """Nodes one load may still compose (shared by every document and file of the load)."""

    def __init__(self) -> None:
        self.left = MAX_LOAD_NODES
        self.exhausted = False


class _Refused(Exception):
    """A document stopped while being composed; ``reason`` as DocumentError takes it."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class _SafeLoader(Composer, _Parser, SafeConstructor, Resolver):
    """PyYAML's safe loader on libyaml's parser, with a composer that counts.

    Every node composed adds one to the document's count, every alias the expanded size of
    the node it repeats; the document is refused as soon as the count passes
    MAX_DOCUMENT_NODES, its nesting MAX_DEPTH, or the load's budget runs out — before the
    node graph (about 300 bytes a node) or the data grow any further. Timestamps are kept as
    the strings they are written as."""

    def __init__(self, stream: str, budget: _Budget) -> None:
        _Parser.__init__(self, stream)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self.budget = budget
        self._count = 0
        self._depth = 0
        self._sizes: dict[str, int] = {}
        """Expanded size of every anchored node composed so far in this document."""
        self._open: set[str] = set()
        """Anchors whose node is being composed (an alias to one refers to itself)."""

    def compose_document(self) -> Any:
        self._count, self._depth = 0, 0
        self._sizes.clear()
        self._open.clear()
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            alias = str(event.anchor)
            if alias in self._open:
                raise _Refused("a YAML alias refers to itself", line)
            self._add(self._sizes.get(alias, 1), line)
            return super().compose_node(parent, index)  # (raises for an undefined alias)
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", line)
        anchor: str | None = event.anchor
        before = self._count
        self._add(1, line)
        if anchor is not None:
            self._open.add(anchor)
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        if anchor is not None:
            self._open.discard(anchor)
            self._sizes[anchor] = self._count - before
        return node

    def _add(self, nodes: int, line: int) -> None:
        self._count += nodes
        self.budget.left -= nodes
        if self._count > MAX_DOCUMENT_NODES:
            raise _Refused(f"the document expands to more than {MAX_DOCUMENT_NODES} YAML "
                           "nodes (aliases?)", line)
        if self.budget.left < 0:
            self.budget.exhausted = True
            raise _Refused(f"more than {MAX_LOAD_NODES} YAML nodes in one load (aliases "
                           "counted expanded): split the change", line)


def _timestamp_as_text(loader: _SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_SafeLoader.add_constructor(  # type: ignore[type-var]  # the stubs know only PyYAML's loaders
    "tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _parse(text: str, source: str,
           budget: _Budget) -> tuple[list[SourceDocument], list[DocumentError]]:
    documents: list[SourceDocument] = []
    errors: list[DocumentError] = []
    loader = _SafeLoader(text, budget)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                document, error = _document(loader, node, source, index)
                if document is not None:
                    documents.append(document)
                if error is not None:
                    errors.append(error)
            index += 1
    except _Refused as err:
        errors.append(DocumentError(source, index, "", err.reason, err.line))
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
    loader: _SafeLoader, node: yaml.Node, source: str, index: int
) -> tuple[SourceDocument | None, DocumentError | None]:
    line = node.start_mark.line + 1
    lines: dict[FieldPath, int] = {}
    problem = _index_lines(node, (), lines, set())
    if problem is not None:
        reason, at = problem
        return None, DocumentError(source, index, "", reason, at)
    data = loader.construct_document(node)
    if data is None:  # an empty document (only comments, or nothing between two ---)
        return None, None
    if not isinstance(data, dict):
        # The kind of value only, never the value: a file that is not a resource (a stray
        # config, a secret) must not be echoed into a CI log.
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__} value"
        reason = f"expected a mapping (apiVersion, kind, metadata, spec), got {kind}"
        return None, DocumentError(source, index, "", reason, line)
    return SourceDocument(source, index, line, data, lines), None


def _index_lines(
    node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], seen: set[int]
) -> tuple[str, int] | None:
    """Record the line of every field; report the first duplicate key."""
    if id(node) in seen:  # an alias: its fields were indexed where the anchor is
        return None
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
