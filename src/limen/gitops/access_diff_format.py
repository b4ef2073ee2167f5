"""Render an access review (:class:`~limen.gitops.access_diff.AccessDiff`) as text, JSON or
a Markdown pull-request comment.

Text, one line per grant gained or lost, risky ones first::

    + alice  ssh root@prod-db-1  (role ops: allow.logins, node_labels env=*)  RISKY: root login
    - bob  db postgres@billing  (deny in role contractor: deny.db_labels)
    + trusted_cluster root  role_map 'admin' -> 'ops'  RISKY: role_map widening
    Access: 2 grants added, 1 removed, 2 users; 2 risky

Grants that differ only in the resource (same user, principal and deciding rule) fold into
one line when there are more than :data:`FOLD_AT` of them: ``+ alice  ssh root@{1200
resources: db-1, db-2, db-3, …}``; the widest come first. With more than one user or resource
changed, the summary adds counts per user and per resource (the widest first). The Markdown
comment holds the summary and the risky grants, and the full text folded in ``<details>``.
Pure code; called by ``lmctl gitops plan --access``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from limen.gitops.access_diff import AccessChange, AccessDiff, RoleMapChange

__all__ = ["FOLD_AT", "access_json", "render_markdown", "render_text", "summary_line"]

FOLD_AT = 5
"""More grants than this differing only in the resource are printed as one line."""
_SHOWN_NAMES = 3
_TOP = 10


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _flag(risky: Sequence[str]) -> str:
    return f"  RISKY: {', '.join(risky)}" if risky else ""


def _role_map_line(change: RoleMapChange) -> str:
    return (f"{change.sign} trusted_cluster {change.cluster}  role_map {change.remote!r} -> "
            f"{change.local!r}{_flag(change.risky)}")


def _what(kind: str, principal: str, target: str) -> str:
    if kind == "rule":
        return f"rule {principal} {target}"
    return f"{kind} {principal}@{target}" if principal else f"{kind} {target}"


def _lines(changes: Sequence[AccessChange]) -> list[tuple[AccessChange, list[str]]]:
    """(a change, the targets of one line): grants that differ only in the resource merged,
    one line per resource unless there are more than FOLD_AT; risky and widest first."""
    groups: dict[tuple[Any, ...], tuple[AccessChange, list[str]]] = {}
    for change in changes:
        key = (change.sign, change.user, change.kind, change.principal, change.detail,
               change.risky)
        groups.setdefault(key, (change, []))[1].extend(change.targets)
    out: list[tuple[AccessChange, list[str]]] = []
    for first, targets in groups.values():
        targets.sort()
        if len(targets) > FOLD_AT:
            out.append((first, targets))
        else:
            out.extend((first, [t]) for t in targets)
    out.sort(key=lambda g: (not g[0].risky, g[0].sign != "+", -len(g[1]), g[0].user,
                            g[0].kind, g[0].principal, g[1][0]))
    return out


def _line(first: AccessChange, targets: list[str]) -> str:
    if len(targets) == 1:
        what = _what(first.kind, first.principal, targets[0])
    else:
        names = ", ".join(targets[:_SHOWN_NAMES])
        what = _what(first.kind, first.principal, f"{{{len(targets)} resources: {names}, …}}")
    return f"{first.sign} {first.user}  {what}  ({first.detail}){_flag(first.risky)}"


def _added(diff: AccessDiff) -> int:
    return sum(len(c.targets) for c in diff.changes if c.sign == "+")


def _risky(diff: AccessDiff) -> int:
    """Flagged grants (a change on N resources counts N) and role_map entries."""
    return sum(len(c.targets) if isinstance(c, AccessChange) else 1 for c in diff.risky)


def _removed(diff: AccessDiff) -> int:
    return sum(len(c.targets) for c in diff.changes if c.sign == "-")


def summary_line(diff: AccessDiff) -> str:
    users = len({c.user for c in diff.changes})
    text = (f"Access: {_plural(_added(diff), 'grant')} added, {_removed(diff)} removed, "
            f"{_plural(users, 'user')}")
    if diff.role_map:
        text += f", {_plural(len(diff.role_map), 'role_map change')}"
    return text + f"; {_risky(diff)} risky"


def _counts(diff: AccessDiff) -> list[str]:
    per_user: Counter[str] = Counter()
    per_target: Counter[str] = Counter()
    for change in diff.changes:
        per_user[change.user] += len(change.targets)
        per_target.update(f"{change.kind} {t}" for t in change.targets)
    lines = []
    for title, counter in (("per user", per_user), ("per resource", per_target)):
        if len(counter) > 1:
            top = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:_TOP]
            shown = ", ".join(f"{name} {count}" for name, count in top)
            more = f" (and {len(counter) - _TOP} more)" if len(counter) > _TOP else ""
            lines.append(f"  {title}: {shown}{more}")
    return lines


def render_text(diff: AccessDiff) -> list[str]:
    """Risky role_map changes and grants first, then the rest; then the summary."""
    lines = [_role_map_line(c) for c in diff.role_map if c.risky]
    lines += [_line(*g) for g in _lines(diff.changes)]
    lines += [_role_map_line(c) for c in diff.role_map if not c.risky]
    lines.append(summary_line(diff))
    lines += _counts(diff)
    return lines


def render_markdown(diff: AccessDiff, plan_lines: Sequence[str] = ()) -> str:
    """A pull-request comment: summary, risky grants, then everything folded."""
    out = ["### Access review", "", f"**{summary_line(diff)}**", ""]
    if diff.empty:
        out.append("No user gains or loses access.")
    risky = [_role_map_line(c) for c in diff.role_map if c.risky]
    risky += [_line(*g) for g in _lines(diff.changes) if g[0].risky and g[0].sign == "+"]
    if risky:
        out += ["#### Risky grants", "", "```diff", *risky, "```", ""]
    if not diff.empty:
        out += ["<details><summary>All access changes</summary>", "", "```diff",
                *render_text(diff)[:-1 - len(_counts(diff))], "```", "", "</details>", ""]
    if plan_lines:
        out += ["<details><summary>Object changes</summary>", "", "```diff", *plan_lines,
                "```", "", "</details>", ""]
    return "\n".join(out)


def access_json(diff: AccessDiff) -> dict[str, Any]:
    return {
        "summary": {"added": _added(diff), "removed": _removed(diff),
                    "users": len({c.user for c in diff.changes}),
                    "role_map": len(diff.role_map), "risky": _risky(diff),
                    "users_evaluated": diff.users, "resources": diff.targets},
        "changes": [c.to_json() for c in diff.changes],
        "role_map": [c.to_json() for c in diff.role_map],
    }
