"""What a user's roles give their certificates, computed once per stored roles and traits.

Compiling roles (templates expanded for the user's traits, label selectors and options
parsed: :class:`~limen.rbac.roleset.RoleSet`) was a fifth of an issuance's time, and
renewals ask the same question again and again. :class:`GrantCache` keeps the answer
(:class:`~limen.auth.issuer.Grant`; and the compiled ``RoleSet`` that the auth API's access
decisions use, ``AuthServer.role_set``) keyed by the exact stored bytes of each role
(:class:`~limen.auth.role_reader.StoredRole`, read from the backend on every issuance) and
the traits: a role edited anywhere has other bytes, so its next issuance misses and compiles
the new role; nothing is invalidated by time or by events, and no answer outlives the
content it was computed from. At most ``size`` grants and ``role_sets`` role sets are kept
(least recently used go). Called by :class:`limen.auth.core.AuthServer`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TypeVar

from limen.auth.issuer import Grant, grant_of
from limen.auth.role_reader import StoredRole
from limen.rbac.roleset import RoleSet

__all__ = ["DEFAULT_SIZE", "ROLE_SET_SIZE", "GrantCache"]

_T = TypeVar("_T")

DEFAULT_SIZE = 4096
"""Distinct (roles, traits) grants kept: one per user whose traits differ, a few hundred
bytes each beyond the roles' stored bytes, which the readers share."""

ROLE_SET_SIZE = 1024
"""Distinct compiled role sets kept: larger (every selector and rule of every role)."""

_Key = tuple[tuple[tuple[str, bytes], ...], tuple[tuple[str, tuple[str, ...]], ...]]


def _key(roles: Sequence[StoredRole], traits: Mapping[str, Sequence[str]] | None) -> _Key:
    """Equal keys, equal answers: the roles' names and stored bytes, the traits as
    ``normalize_traits`` reads them (a bare string is one value)."""
    return (tuple((r.name, r.stored) for r in roles),
            tuple(sorted((name, (values,) if isinstance(values, str) else tuple(values))
                         for name, values in (traits or {}).items())))


class GrantCache:
    """:func:`~limen.auth.issuer.grant_of` and :class:`~limen.rbac.roleset.RoleSet`
    memoised by content (see the module doc)."""

    def __init__(self, size: int = DEFAULT_SIZE, role_sets: int = ROLE_SET_SIZE) -> None:
        self.sizes = {"grants": size, "role_sets": role_sets}
        self._grants: OrderedDict[_Key, Grant] = OrderedDict()
        self._role_sets: OrderedDict[_Key, RoleSet] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def grant(self, roles: Sequence[StoredRole],
              traits: Mapping[str, tuple[str, ...]]) -> Grant:
        """What ``roles`` (as stored) give a certificate for ``traits``."""
        key = _key(roles, traits)
        found = self._found(self._grants, key)
        if found is None:
            found = self._keep(self._grants, key, grant_of([r.resource for r in roles], traits),
                               self.sizes["grants"])
        return found

    def role_set(self, roles: Sequence[StoredRole],
                 traits: Mapping[str, Sequence[str]] | None) -> RoleSet:
        """``roles`` (as stored) compiled for ``traits``, for access decisions (immutable,
        shared by every request that asks with the same roles and traits)."""
        key = _key(roles, traits)
        found = self._found(self._role_sets, key)
        if found is None:
            found = self._keep(self._role_sets, key,
                               RoleSet.from_roles([r.resource for r in roles], traits),
                               self.sizes["role_sets"])
        return found

    def _found(self, answers: OrderedDict[_Key, _T], key: _Key) -> _T | None:
        found = answers.get(key)
        if found is None:
            self.misses += 1
            return None
        answers.move_to_end(key)
        self.hits += 1
        return found

    def _keep(self, answers: OrderedDict[_Key, _T], key: _Key, answer: _T, size: int) -> _T:
        answers[key] = answer
        if len(answers) > size:
            answers.popitem(last=False)
        return answer
