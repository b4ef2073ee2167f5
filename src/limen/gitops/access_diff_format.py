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


def _groups(changes: Sequence[AccessChange]) -> list[list[AccessChange]]:
    groups: dict[tuple[Any, ...], list[AccessChange]] = {}
    for change in changes:
        key = (change.sign, change.user, change.kind, change.principal, change.detail,
               change.risky)
        groups.setdefault(key, []).append(change)
    out: list[list[AccessChange]] = []
    for group in groups.values():
        if len(group) > FOLD_AT:
            out.append(group)
        else:
            out.extend([c] for c in group)
    out.sort(key=lambda g: (not g[0].risky, g[0].sign != "+", -len(g), g[0].user, g[0].kind,
                            g[0].principal, g[0].target))
    return out


def _line(group: list[AccessChange]) -> str:
    first = group[0]
    if len(group) == 1:
        what = first.what
    else:
        names = ", ".join(c.target for c in group[:_SHOWN_NAMES])
        folded = f"{{{len(group)} resources: {names}, …}}"
        what = f"{first.kind} {first.principal}@{folded}" if first.principal else \
            f"{first.kind} {folded}"
    return f"{first.sign} {first.user}  {what}  ({first.detail}){_flag(first.risky)}"


def summary_line(diff: AccessDiff) -> str:
    added = sum(1 for c in diff.changes if c.sign == "+")
    removed = len(diff.changes) - added
    users = len({c.user for c in diff.changes})
    text = f"Access: {_plural(added, 'grant')} added, {removed} removed, {_plural(users, 'user')}"
    if diff.role_map:
        text += f", {_plural(len(diff.role_map), 'role_map change')}"
    return text + f"; {len(diff.risky)} risky"


def _counts(diff: AccessDiff) -> list[str]:
    per_user: Counter[str] = Counter(c.user for c in diff.changes)
    per_target: Counter[str] = Counter(f"{c.kind} {c.target}" for c in diff.changes)
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
    lines += [_line(g) for g in _groups(diff.changes)]
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
    risky += [_line(g) for g in _groups(diff.changes) if g[0].risky and g[0].sign == "+"]
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
    added = sum(1 for c in diff.changes if c.sign == "+")
    return {
        "summary": {"added": added, "removed": len(diff.changes) - added,
                    "users": len({c.user for c in diff.changes}),
                    "role_map": len(diff.role_map), "risky": len(diff.risky),
                    "users_evaluated": diff.users, "resources": diff.targets},
        "changes": [c.to_json() for c in diff.changes],
        "role_map": [c.to_json() for c in diff.role_map],
    }
