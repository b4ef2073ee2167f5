"""What a user's roles give their certificates, computed once per stored roles and traits.

Compiling roles (templates expanded for the user's traits, label selectors and options
parsed: :class:`~limen.rbac.roleset.RoleSet`) costs more than signing both certificates, and
renewals ask the same question again and again. :class:`GrantCache` keeps the answer
(:class:`~limen.auth.issuer.Grant`) keyed by the exact stored bytes of each role
(:class:`~limen.auth.role_reader.StoredRole`, read from the backend on every issuance) and
the traits: a role edited anywhere has other bytes, so its next issuance misses and compiles
the new role; nothing is invalidated by time or by events, and no answer outlives the
content it was computed from. At most ``size`` answers are kept (least recently used go).
Called by :class:`limen.auth.core.AuthServer`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from limen.auth.issuer import Grant, grant_of
from limen.auth.role_reader import StoredRole

__all__ = ["DEFAULT_SIZE", "GrantCache"]

DEFAULT_SIZE = 4096
"""Distinct (roles, traits) answers kept: one per user whose traits differ, a few bytes each
beyond the roles' stored bytes, which the readers share."""

_Key = tuple[tuple[tuple[str, bytes], ...], tuple[tuple[str, tuple[str, ...]], ...]]


class GrantCache:
    """:func:`~limen.auth.issuer.grant_of` memoised by content (see the module doc)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._answers: OrderedDict[_Key, Grant] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def grant(self, roles: Sequence[StoredRole],
              traits: Mapping[str, tuple[str, ...]]) -> Grant:
        """The grant of ``roles`` (as stored) for ``traits``."""
        key: _Key = (tuple((r.name, r.stored) for r in roles),
                     tuple(sorted((name, tuple(values)) for name, values in traits.items())))
        found = self._answers.get(key)
        if found is not None:
            self._answers.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        found = grant_of([r.resource for r in roles], traits)
        self._answers[key] = found
        if len(self._answers) > self.size:
            self._answers.popitem(last=False)
        return found
