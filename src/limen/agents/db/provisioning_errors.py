"""The errors of automatic database user provisioning at the db agent.

:class:`AdminQueryFailed`: the database refused a statement of the admin connection;
:class:`ProvisioningRefused`: Limen itself refuses (a pre-existing user Limen does not manage,
a name the database cannot hold). Raised by :mod:`limen.agents.db.admin_postgres`,
:mod:`limen.agents.db.admin_mysql` and the provisioners; caught by
:mod:`limen.agents.db.provisioning`, which audits them and refuses the session.
"""

from __future__ import annotations

from limen.errors import AccessDenied, LimenError

__all__ = ["AdminQueryFailed", "ProvisioningRefused"]


class AdminQueryFailed(LimenError):
    """The database refused a statement of the admin connection (its message and SQLSTATE)."""

    def __init__(self, message: str, sqlstate: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ProvisioningRefused(AccessDenied):
    """Limen will not provision this database user (the reason says why)."""
