"""``role_map`` of a TrustedCluster: which local roles a root cluster's roles become.

Teleport's semantics (``lib/services/role_map.go``)::

    - {remote: dev, local: [visitor]}                exact name
    - {remote: 'team-*', local: [member]}            glob: '*' matches any run (a capture)
    - {remote: '^admin-(.*)$', local: ['ops-$1']}    regular expression, full match, $1 captures

Every entry is tried against every remote role; a remote role may map to several local roles
and several entries may match it. Remote roles no entry matches are dropped (they grant nothing
here). The result is sorted and without duplicates. Pure functions; called by the trusted
cluster reconciler (``limen.trust.reconciler``) and by the node's access policy through it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limen.errors import BadParameter

__all__ = ["RoleMapping", "compile_role_map", "map_roles"]

_CAPTURE = re.compile(r"\$(?:\{(\d+)\}|(\d+))")


@dataclass(frozen=True)
class RoleMapping:
    """One compiled ``role_map`` entry."""

    remote: str
    pattern: re.Pattern[str]
    local: tuple[str, ...]

    def apply(self, role: str) -> list[str]:
        """The local roles ``role`` maps to through this entry (empty when it does not match)."""
        found = self.pattern.fullmatch(role)
        if found is None:
            return []
        out = []
        for template in self.local:
            name = _expand(template, found)
            if name:
                out.append(name)
        return out


def _expand(template: str, found: re.Match[str]) -> str:
    """``$1`` / ``${1}`` replaced by the capture (empty when the group does not exist)."""
    def group(ref: re.Match[str]) -> str:
        index = int(ref.group(1) or ref.group(2))
        if index > (found.re.groups or 0):
            return ""
        return found.group(index) or ""

    return _CAPTURE.sub(group, template)


def _compile_remote(remote: str) -> re.Pattern[str]:
    if remote.startswith("^") and remote.endswith("$"):
        try:
            return re.compile(remote)
        except re.error as err:
            raise BadParameter(f"role_map: invalid regular expression {remote!r}: {err}") from None
    if remote.startswith("^") or remote.endswith("$"):
        raise BadParameter(f"role_map: {remote!r} looks like a regular expression but is not "
                           "anchored: write ^...$")
    # Teleport's GlobToRegexp: quote everything, '*' is a capture of any run of characters.
    return re.compile(re.escape(remote).replace(r"\*", "(.*)"))


def compile_role_map(role_map: Iterable[Mapping[str, Any]]) -> tuple[RoleMapping, ...]:
    """Compile a ``role_map``; ``BadParameter`` for a malformed entry or regular expression."""
    compiled = []
    for position, entry in enumerate(role_map):
        remote = entry.get("remote") if isinstance(entry, Mapping) else None
        local = entry.get("local") if isinstance(entry, Mapping) else None
        if not isinstance(remote, str) or not remote:
            raise BadParameter(f"role_map[{position}].remote must be a non-empty string")
        if isinstance(local, str):
            local = [local]
        if not isinstance(local, list) or not local or \
                not all(isinstance(n, str) and n for n in local):
            raise BadParameter(f"role_map[{position}].local must be a list of role names")
        compiled.append(RoleMapping(remote, _compile_remote(remote), tuple(local)))
    return tuple(compiled)


def map_roles(remote_roles: Sequence[str],
              role_map: Iterable[Mapping[str, Any]] | Sequence[RoleMapping]) -> list[str]:
    """The local roles for ``remote_roles`` (sorted, unique; empty when nothing matches)."""
    entries = list(role_map)
    compiled = (tuple(e for e in entries if isinstance(e, RoleMapping))
                if all(isinstance(e, RoleMapping) for e in entries)
                else compile_role_map(e for e in entries if isinstance(e, Mapping)))
    local: set[str] = set()
    for role in remote_roles:
        for mapping in compiled:
            local.update(mapping.apply(role))
    return sorted(local)
