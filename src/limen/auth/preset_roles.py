"""Creates the preset roles (``access``, ``editor``, ``auditor``: ``limen.rbac.presets``) that
are missing, at every start of auth, so that ``lmctl users add me --roles access`` works on a
bare ``limen start``.

A preset is stored with origin ``preset`` and is never changed here once it exists: a role of
the same name from Git, Kubernetes or ``lmctl apply`` takes it over (``limen.services``), and
what took it over keeps it. A deleted preset comes back at the next start. Each creation is
audited (``role.created``, user ``preset``). Called by ``limen.auth.auth_service`` after the CAs
are loaded.
"""

from __future__ import annotations

import logging

from limen.api.resources import Kind, Origin
from limen.auth.core import AuthServer
from limen.errors import AlreadyExists, CompareFailed
from limen.rbac.presets import preset_roles

__all__ = ["ACTOR", "ensure_presets"]

log = logging.getLogger(__name__)

ACTOR = "preset"
"""The ``user`` of the audit events of preset creations."""


async def ensure_presets(auth: AuthServer) -> list[str]:
    """Create every missing preset role; returns the names created."""
    created = []
    for role in preset_roles():
        if await auth.store.find(Kind.ROLE, role.name) is not None:
            continue
        try:
            await auth.store.create(role.with_origin(Origin.PRESET))
        except (AlreadyExists, CompareFailed):  # another writer declared it meanwhile: theirs
            continue
        created.append(role.name)
        await auth.emit("role.created", user=ACTOR, name=role.name,
                        origin=Origin.PRESET.value, kind=Kind.ROLE.value)
    if created:
        log.info("created the preset roles %s", ", ".join(created))
    return created
