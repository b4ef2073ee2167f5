"""The clusters a logged-in user reaches: their root and the leaves their roles allow.

``refresh_clusters`` asks the root proxy (``/v1/webapi/user/clusters``), then remembers the
leaves in the profile (``lmsh config`` writes a ``*.<leaf>`` host pattern for each) and trusts
each leaf's host CA for ``*.<leaf>`` in ``~/.limen/known_hosts`` (the leaf's nodes present
host certificates of the leaf). The user's certificate stays the root's: a leaf accepts it
because it trusts the root. Called by ``lmsh clusters``, ``lmsh config`` and
``lmsh ssh/ls --cluster`` (``limen.cli``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.errors import NotFound

__all__ = ["cluster_rows", "known_hosts_lines", "leaf_host", "refresh_clusters", "require_leaf"]


def known_hosts_lines(leaves: Sequence[Mapping[str, Any]]) -> list[str]:
    """``@cert-authority *.<leaf> KEY`` for every leaf's host CA key."""
    return [f"@cert-authority *.{leaf['name']} {key}" for leaf in leaves
            for key in leaf.get("host_ca_keys") or []]


def leaf_host(host: str, cluster: str) -> str:
    """``web1`` → ``web1.leaf``: the name OpenSSH checks against the leaf's host CA line."""
    return host if host.endswith(f".{cluster}") else f"{host}.{cluster}"


def cluster_rows(profile: Profile, leaves: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What ``lmsh clusters`` lists: the root first, then the leaves."""
    rows: list[dict[str, Any]] = [{"name": profile.cluster, "type": "root",
                                   "connection": "online", "labels": {},
                                   "last_heartbeat": None, "selected": True}]
    rows += [{"name": leaf["name"], "type": "leaf", "connection": leaf["connection"],
              "labels": dict(leaf.get("labels") or {}),
              "last_heartbeat": leaf.get("last_heartbeat"), "selected": False}
             for leaf in leaves]
    return rows


async def refresh_clusters(store: ProfileStore,
                           profile: Profile) -> tuple[Profile, list[dict[str, Any]]]:
    """Ask the root for the leaves visible to the user and remember them (see module doc)."""
    api = WebApi.for_profile(store, profile)
    try:
        answer = await api.as_user("clusters")
    finally:
        await api.close()
    leaves = [dict(item) for item in answer.get("items") or []]
    updated = store.save_leaf_clusters(profile, [leaf["name"] for leaf in leaves],
                                       known_hosts_lines(leaves))
    return updated, leaves


def require_leaf(leaves: Sequence[Mapping[str, Any]], cluster: str) -> Mapping[str, Any]:
    for leaf in leaves:
        if leaf["name"] == cluster:
            return leaf
    raise NotFound(f"unknown cluster {cluster!r}: run lmsh clusters to see those you may reach")
