"""Replace or remove one ``[section]`` of an INI-style text, leaving the rest byte for byte.

The format of ``~/.pg_service.conf`` (libpq) and ``~/.my.cnf`` (MySQL/MariaDB option files):
``[name]`` header lines, ``key=value`` lines, comment lines starting with one of
``comment_chars``. A section runs from its header to the last line before the next header
that is not blank and not a comment: blank lines and comments just before the next header are
left where they are (they usually describe that next section). Only the first section of the
name is touched. Pure text in, text out; called by :mod:`limen.client.db_profiles`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["has_section", "remove_section", "replace_section"]

_HEADER = re.compile(r"\s*\[([^\]\n]*)\]\s*")


def _header_name(line: str) -> str | None:
    match = _HEADER.fullmatch(line)
    return match.group(1) if match else None


def _is_filler(line: str, comment_chars: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped[0] in comment_chars


def _is_blank(line: str) -> bool:
    return not line.strip()


def _locate(lines: Sequence[str], name: str, comment_chars: str) -> tuple[int, int] | None:
    """(start, end) of section ``name``'s own lines: its header up to its last non-filler
    line (exclusive end); None when there is no such section."""
    for start, line in enumerate(lines):
        if _header_name(line) != name:
            continue
        end = start + 1
        while end < len(lines) and _header_name(lines[end]) is None:
            end += 1
        while end > start + 1 and _is_filler(lines[end - 1], comment_chars):
            end -= 1
        return start, end
    return None


def has_section(text: str, name: str) -> bool:
    """Whether ``text`` has a ``[name]`` header."""
    return any(_header_name(line) == name for line in text.splitlines())


def replace_section(text: str, name: str, body: Sequence[str], comment_chars: str = "#") -> str:
    """``text`` with section ``name`` holding exactly the ``body`` lines (no line ends), in
    place of the old one, or appended after a blank line when there was none."""
    lines = text.splitlines(keepends=True)
    rendered = [f"[{name}]\n", *(f"{line}\n" for line in body)]
    found = _locate(lines, name, comment_chars)
    if found is not None:
        start, end = found
        lines[start:end] = rendered
        return "".join(lines)
    if not text or text.endswith("\n\n"):
        separator = ""
    elif text.endswith("\n"):
        separator = "\n"
    else:
        separator = "\n\n"
    return text + separator + "".join(rendered)


def remove_section(text: str, name: str, comment_chars: str = "#") -> str:
    """``text`` without section ``name`` (and without the blank line that separated it);
    unchanged when there is no such section."""
    lines = text.splitlines(keepends=True)
    found = _locate(lines, name, comment_chars)
    if found is None:
        return text
    start, end = found
    del lines[start:end]
    if start == 0:
        while lines and _is_blank(lines[0]):
            del lines[0]
    elif _is_blank(lines[start - 1]) and (
            start == len(lines) or _is_blank(lines[start])
            or _header_name(lines[start]) is not None):
        del lines[start - 1]
    return "".join(lines)
