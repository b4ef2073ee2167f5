"""What automatic user provisioning changed in a database: :class:`Change`, returned by the
provisioners (:mod:`limen.agents.db.provisioning_postgres`,
:mod:`limen.agents.db.provisioning_mysql`) and written into the ``db.user.provisioned`` /
``db.user.deactivated`` audit events by :mod:`limen.agents.db.provisioning`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Change"]


@dataclass(frozen=True)
class Change:
    created: bool = False
    """The database user did not exist and was created."""
    granted: tuple[str, ...] = ()
    """Database roles granted now."""
    revoked: tuple[str, ...] = ()
    """Database roles revoked now (granted earlier, no longer in the user's db_roles)."""
