"""The preset roles every cluster starts with, as Teleport's (``lib/services/presets.go``):

- ``access``: the user's own logins (``{{internal.logins}}``), Kubernetes groups/users and
  database users/names from their traits, on every node, app, database and Kubernetes
  cluster; replays and lists the sessions they took part in (a ``session`` rule with
  ``where: contains(session.participants, user.metadata.name)``);
- ``editor``: administers Limen's own objects (users, roles, trusted clusters, resources,
  tokens, clusters) and reads the audit log; no access to any server;
- ``auditor``: reads the audit log and every session recording; no access to any server.

Auth creates the missing ones at every start (``limen.auth.preset_roles``) with origin ``preset``;
a role of the same name from Git, Kubernetes or ``lmctl apply`` takes a preset over (see
``limen.services.plan``). Pure data; called by ``limen.auth.preset_roles`` and tests.
"""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource

__all__ = ["PRESET_NAMES", "SESSION_PARTICIPANT", "preset_roles"]

SESSION_PARTICIPANT = "contains(session.participants, user.metadata.name)"
"""Teleport's ``where`` of the access preset's session rule: only sessions you were in."""
_ALL = {"*": "*"}
_READ = ["list", "read"]
_WRITE = ["list", "create", "read", "update", "delete"]
_DESCRIPTION = "limen.dev/description"

_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "access": ("Access cluster resources: your own logins everywhere; replay your sessions", {
        "options": {"max_session_ttl": "30h", "forward_agent": True, "port_forwarding": True,
                    "cert_format": "standard"},
        "allow": {
            "logins": ["{{internal.logins}}"],
            "node_labels": dict(_ALL), "app_labels": dict(_ALL),
            "kubernetes_labels": dict(_ALL), "db_labels": dict(_ALL),
            "kubernetes_groups": ["{{internal.kubernetes_groups}}"],
            "kubernetes_users": ["{{internal.kubernetes_users}}"],
            "db_users": ["{{internal.db_users}}"],
            "db_names": ["{{internal.db_names}}"],
            "rules": [{"resources": ["session"], "verbs": _READ,
                       "where": SESSION_PARTICIPANT}],
        },
    }),
    "editor": ("Edit cluster configuration: users, roles, trusted clusters, resources, tokens", {
        "options": {"max_session_ttl": "8h", "cert_format": "standard"},
        "allow": {
            "rules": [
                {"resources": ["user", "role", "trusted_cluster", "resource", "token",
                               "cluster"], "verbs": _WRITE},
                {"resources": ["event"], "verbs": _READ},
            ],
        },
    }),
    "auditor": ("Review the audit log and replay every session recording", {
        "options": {"max_session_ttl": "8h", "cert_format": "standard"},
        "allow": {"rules": [{"resources": ["session", "event"], "verbs": _READ}]},
    }),
}

PRESET_NAMES = tuple(_SPECS)


def preset_roles() -> list[Resource]:
    """Fresh copies of the preset roles (no origin label: the caller sets ``preset``)."""
    out = []
    for name, (description, spec) in _SPECS.items():
        document = Resource(Kind.ROLE, name, spec=spec,
                            annotations={_DESCRIPTION: description}).to_document()
        out.append(Resource.from_document(document))  # a deep copy: callers may not share
    return out
