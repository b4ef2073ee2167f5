"""The prune guard: one commit may not delete everything (or most of) what Git declared.

A commit that removes every document — an empty branch pushed by mistake, a bad merge, a
directory moved without updating ``gitops.path``'s content — would otherwise prune every
user, role and resource the sync owns in one transaction. The sync refuses such a commit
before anything is written (``gitops.rejected``, shown by ``lmctl gitops status``):

* an **empty tree** (no document at all while the sync owns objects) is applied only when
  allowed;
* a commit that deletes more than ``gitops.max_prune_fraction`` (default 0.5) of the
  objects the sync owns is applied only when allowed — once the sync owns more than
  ``gitops.prune_guard_min`` (default 10) objects, so a small repository is not hindered.

Allowed means: the commit message has the trailer ``Limen-Allow-Prune: yes`` (it applies to
that commit only), or a file named ``limen-allow-prune`` sits at the top of the synced path
(remove it in the next commit). Called by ``limen.gitops.sync`` with the plan it is about to
apply; pure code.
"""

from __future__ import annotations

import re

from limen.api.resources import Origin
from limen.errors import BadParameter
from limen.services.plan import Action, Plan

__all__ = ["ALLOW_FILE", "ALLOW_TRAILER", "PruneRefused", "check_prune", "trailer_allows"]

ALLOW_FILE = "limen-allow-prune"
"""A file of this name at the top of the synced path allows a big prune or an empty tree."""
ALLOW_TRAILER = "Limen-Allow-Prune"
"""A commit trailer ``Limen-Allow-Prune: yes`` allows it for that commit."""
_TRAILER = re.compile(rf"^{ALLOW_TRAILER}:\s*(yes|true)\s*$", re.I | re.M)


class PruneRefused(BadParameter):
    """The commit would delete too much; nothing was applied."""


def trailer_allows(message: str) -> bool:
    """Does a full commit message carry ``Limen-Allow-Prune: yes``?"""
    return _TRAILER.search(message) is not None


def check_prune(plan: Plan, *, max_fraction: float, minimum: int, allowed: bool) -> None:
    """Raise :class:`PruneRefused` when ``plan`` deletes too much without being allowed."""
    if allowed or plan.origin is not Origin.GIT:
        return
    deleted = plan.count(Action.DELETE)
    if not deleted:
        return
    owned = sum(1 for e in plan.entries if e.current is not None
                and e.current.origin is Origin.GIT)
    kept = len(plan.entries) - deleted
    how = (f"commit with the trailer '{ALLOW_TRAILER}: yes', or add a file "
           f"'{ALLOW_FILE}' at the synced path")
    if kept == 0:
        raise PruneRefused(
            f"the commit declares no object and would delete all {deleted} objects the sync "
            f"owns: refused (nothing was applied); to empty the cluster on purpose, {how}")
    fraction = deleted / owned if owned else 0.0
    if owned > minimum and fraction > max_fraction:
        raise PruneRefused(
            f"the commit would delete {deleted} of the {owned} objects the sync owns "
            f"({fraction:.0%}, more than gitops.max_prune_fraction {max_fraction:.0%}): "
            f"refused (nothing was applied); if this is intended, {how}")
