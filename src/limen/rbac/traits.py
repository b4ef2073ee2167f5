"""Trait expansion of role values: ``{{internal.logins}}``, ``{{external.team}}``, ...

Roles are expanded once per identity, when :class:`limen.rbac.roleset.RoleSet` is built.
The template language itself lives in ``limen.api.templates``; this module applies it to the
fields of a role the way Teleport's ``ApplyTraits`` does (``lib/services/role.go``):

- a value that expands to nothing (missing trait, no ``regexp.replace`` match) is dropped;
- every value a trait holds is kept (a list trait yields several values), duplicates removed;
- a label key expands to its FIRST value; a key that expands to nothing can never match;
- logins that are not valid Unix user names after expansion are dropped
  (Teleport's ``filterInvalidUnixLogins``).

A trait value is literal text wherever it lands: in a label value it is quoted inside the
role's own glob or ``^...$`` around it (:func:`limen.rbac.labels.compile_templated`), a label
key built from a trait is compared exactly (a trait ``*`` never makes ``'*': '*'``), and a
principal (login, database user or name, Kubernetes group or user) that a template expands
to exactly ``*`` is dropped, since ``*`` there means "any". Only the role's author writes
patterns; a user's traits (often from an identity provider the user can edit) never do.

A malformed template raises :class:`~limen.errors.BadParameter`; the caller decides what
that means for the role (see :mod:`limen.rbac.role`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from limen.api.templates import parse_template
from limen.rbac.labels import WILDCARD, ValuePattern, compile_templated

__all__ = [
    "Traits",
    "expand_label_map",
    "expand_label_values",
    "expand_logins",
    "expand_value",
    "expand_values",
    "is_valid_unix_login",
]

Traits = Mapping[str, Sequence[str]]

_MAX_UNIX_LOGIN = 32


def expand_value(text: str, traits: Traits) -> list[str]:
    """All the values ``text`` expands to (``[text]`` for a literal); empty results dropped,
    and so is a template that expands to exactly the wildcard ``*`` (a trait is literal)."""
    template = parse_template(text)
    if template is None:
        return [text]
    return [value for value in template.expand(traits) if value and value != WILDCARD]


def expand_values(values: Iterable[str], traits: Traits) -> tuple[str, ...]:
    """Expand each value and keep the first occurrence of each result, in order."""
    out: dict[str, None] = {}
    for text in values:
        for value in expand_value(text, traits):
            out.setdefault(value, None)
    return tuple(out)


def is_valid_unix_login(login: str) -> bool:
    """Teleport's ``IsValidUnixUser``: 1-32 chars, no leading '-', no ':' '/', no spaces."""
    if not login or len(login) > _MAX_UNIX_LOGIN or login.startswith("-"):
        return False
    if ":" in login or "/" in login:
        return False
    return not any(ch.isspace() or not ch.isprintable() for ch in login)


def expand_logins(values: Iterable[str], traits: Traits) -> tuple[str, ...]:
    return tuple(v for v in expand_values(values, traits) if is_valid_unix_login(v))


def expand_label_values(values: Iterable[str], traits: Traits) -> tuple[str | ValuePattern, ...]:
    """A label map's values for one user: the author's literals as they are (compiled as
    globs or regular expressions later), templates as patterns whose trait part is quoted."""
    out: dict[str, str | ValuePattern] = {}
    for text in values:
        template = parse_template(text)
        if template is None:
            out.setdefault(f"author:{text}", text)
            continue
        for literal in template.trait_values(traits):
            pattern = compile_templated(template.prefix, literal, template.suffix)
            out.setdefault(f"trait:{pattern.text}", pattern)
    return tuple(out.values())


def expand_label_map(
    labels: Mapping[str, Sequence[str]], traits: Traits
) -> list[tuple[str | None, tuple[str | ValuePattern, ...]]]:
    """Expand keys (first value wins, ``None`` when nothing) and values of a label map."""
    out: list[tuple[str | None, tuple[str | ValuePattern, ...]]] = []
    for key, values in labels.items():
        keys = expand_value(key, traits)
        out.append((keys[0] if keys else None, expand_label_values(values, traits)))
    return out
