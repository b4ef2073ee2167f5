"""Role label selectors (``node_labels``, ``db_labels``, ...) matched against resource labels.

A role's label map is compiled once (after trait expansion) into a :class:`LabelSelector`;
the checks in :mod:`limen.rbac.checks` then match it against a resource's labels. The
semantics are Teleport's (``lib/services/role.go`` ``MatchLabelGetter`` and
``lib/utils/replace.go`` ``SliceMatchesRegex``):

- an empty selector matches nothing, in allow and in deny alike;
- ``'*': '*'`` matches everything, even a resource without labels;
- otherwise every key of the selector must be a label of the resource, and the resource's
  value must match one of the selector's values (a list is an OR);
- a value ``*`` matches any value of an existing label; ``^...$`` is a regular expression;
  any other value is a glob whose ``*`` matches any run of characters (a literal when it has
  no ``*``).
- the part of a value that comes from a user's trait (``{{external.team}}``) is literal text
  inside whatever the role author wrote around it (:func:`compile_templated`): a trait ``*``,
  ``c*`` or ``^.*$`` matches only a label holding exactly that text, never more.

Called by :mod:`limen.rbac.role` (compilation) and :mod:`limen.rbac.checks` (matching).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limen.errors import BadParameter

__all__ = [
    "EMPTY_SELECTOR",
    "WILDCARD",
    "LabelSelector",
    "ValuePattern",
    "compile_selector",
    "compile_templated",
    "compile_value",
    "normalize_label_map",
]

WILDCARD = "*"


@dataclass(frozen=True)
class ValuePattern:
    """One selector value: the wildcard, a regular expression, a glob or a literal."""

    text: str
    regex: re.Pattern[str] | None
    """``None`` for the wildcard ``*``."""

    @property
    def is_wildcard(self) -> bool:
        return self.regex is None

    def matches(self, value: str) -> bool:
        if self.regex is None:
            return True
        # ^...$ patterns are searched like Go's MatchString; globs are compiled anchored.
        return self.regex.search(value) is not None


def compile_value(text: str) -> ValuePattern:
    """Compile one selector value; raises BadParameter for an invalid regular expression."""
    if text == WILDCARD:
        return ValuePattern(text, None)
    if text.startswith("^") and text.endswith("$"):
        try:
            return ValuePattern(text, re.compile(text))
        except re.error as err:
            raise BadParameter(f"invalid regular expression {text!r}: {err}") from err
    # Teleport's GlobToRegexp: quote everything, then let '*' match any run of characters.
    return ValuePattern(text, re.compile(rf"\A(?:{_glob(text)})\Z"))


def _glob(text: str) -> str:
    return re.escape(text).replace(r"\*", ".*")


def compile_templated(prefix: str, literal: str, suffix: str) -> ValuePattern:
    """A selector value ``prefix{{trait}}suffix`` expanded to ``literal`` for one user.

    The role author's ``prefix`` and ``suffix`` keep their meaning (a ``^...$`` regular
    expression around the template, glob ``*`` otherwise); the trait's ``literal`` is quoted,
    so it can only ever match itself. Raises BadParameter for an invalid regular expression.
    """
    text = f"{prefix}{literal}{suffix}"
    if prefix.startswith("^") and suffix.endswith("$"):
        pattern = f"{prefix}{re.escape(literal)}{suffix}"
        try:
            return ValuePattern(text, re.compile(pattern))
        except re.error as err:
            raise BadParameter(f"invalid regular expression {text!r}: {err}") from err
    glob = f"{_glob(prefix)}{re.escape(literal)}{_glob(suffix)}"
    return ValuePattern(text, re.compile(rf"\A(?:{glob})\Z"))


@dataclass(frozen=True)
class LabelSelector:
    """A compiled label map. ``entries`` keys of ``None`` came from a key template that
    expanded to nothing: such an entry can never be satisfied."""

    entries: tuple[tuple[str | None, tuple[ValuePattern, ...]], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.entries

    @property
    def matches_all(self) -> bool:
        # Teleport: selector['*'] == ['*'] matches everything, even an unlabelled resource.
        return any(
            key == WILDCARD and len(values) == 1 and values[0].is_wildcard
            for key, values in self.entries
        )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.mismatch(labels) is None

    def mismatch(self, labels: Mapping[str, str]) -> str | None:
        """``None`` when the selector matches ``labels``, else a short reason why not."""
        if self.is_empty:
            return "no labels are selected"
        if self.matches_all:
            return None
        for key, values in self.entries:
            if key is None:
                return "a label key template expanded to nothing"
            if key not in labels:
                return f"label {key!r} is missing"
            if any(v.is_wildcard for v in values):
                continue
            if not any(v.matches(labels[key]) for v in values):
                wanted = ", ".join(v.text for v in values) or "nothing (no values)"
                return f"label {key}={labels[key]!r} does not match {wanted}"
        return None

    def describe(self) -> str:
        parts = []
        for key, values in self.entries:
            shown = "|".join(v.text for v in values) or "<none>"
            parts.append(f"{key if key is not None else '<empty>'}={shown}")
        return "{" + ", ".join(parts) + "}"


EMPTY_SELECTOR = LabelSelector()


def normalize_label_map(raw: Any, field: str) -> dict[str, list[str]]:
    """Accept ``{key: value}`` or ``{key: [values]}`` (Teleport's ``Labels`` YAML forms)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BadParameter(f"{field} must be a map of label names to values")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise BadParameter(f"{field} has a non-string label name {key!r}")
        if isinstance(value, str):
            out[key] = [value]
        elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            raise BadParameter(f"{field}.{key} must be a string or a list of strings")
    return out


def compile_selector(
    expanded: Sequence[tuple[str | None, Sequence[str | ValuePattern]]], field: str
) -> LabelSelector:
    """Compile an already trait-expanded label map (see :func:`limen.rbac.traits`): strings
    are the role author's values, :class:`ValuePattern` values were built from traits."""
    entries: list[tuple[str | None, tuple[ValuePattern, ...]]] = []
    for key, values in expanded:
        patterns = tuple(v if isinstance(v, ValuePattern) else compile_value(v) for v in values)
        if key == WILDCARD and not (len(patterns) == 1 and patterns[0].is_wildcard):
            # Teleport rejects '*: <value>': only '*': '*' is meaningful.
            shown = [p.text for p in patterns]
            raise BadParameter(f"{field}: selector '*: {shown}' is not supported")
        entries.append((key, patterns))
    return LabelSelector(tuple(entries))
