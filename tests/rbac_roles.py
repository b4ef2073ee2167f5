"""Role resources for the RBAC unit tests, built from their ``allow`` / ``deny`` / ``options``
sections (a section left out is absent from the spec, as in YAML). Used by
``tests/unit/test_rbac_table.py``, ``test_rbac_where.py`` and ``test_security_trait_literals.py``.
"""

from __future__ import annotations

from typing import Any

from limen.api.resources import Kind, Resource

__all__ = ["role"]


def role(name: str, allow: dict[str, Any] | None = None, deny: dict[str, Any] | None = None,
         options: dict[str, Any] | None = None) -> Resource:
    sections = {"allow": allow, "deny": deny, "options": options}
    return Resource(kind=Kind.ROLE, name=name,
                    spec={key: value for key, value in sections.items() if value is not None})
