"""Which audit event a change of a declarative resource emits. Called by the auth server."""

from __future__ import annotations

from limen.api.resources import Kind
from limen.services.plan import Action

__all__ = ["change_event_type"]

_EVENTS = {
    (Kind.ROLE, Action.CREATE): "role.created",
    (Kind.ROLE, Action.UPDATE): "role.updated",
    (Kind.ROLE, Action.DELETE): "role.deleted",
    (Kind.USER, Action.CREATE): "user.create",
    (Kind.USER, Action.UPDATE): "user.update",
    (Kind.USER, Action.DELETE): "user.delete",
    (Kind.RESOURCE, Action.CREATE): "resource.created",
    (Kind.RESOURCE, Action.UPDATE): "resource.updated",
    (Kind.RESOURCE, Action.DELETE): "resource.deleted",
    (Kind.TRUSTED_CLUSTER, Action.CREATE): "trusted_cluster.create",
    (Kind.TRUSTED_CLUSTER, Action.DELETE): "trusted_cluster.delete",
    (Kind.LOCK, Action.CREATE): "lock.created",
    (Kind.LOCK, Action.UPDATE): "lock.updated",
    (Kind.LOCK, Action.DELETE): "lock.deleted",
    (Kind.OIDC_CONNECTOR, Action.CREATE): "oidc_connector.created",
    (Kind.OIDC_CONNECTOR, Action.UPDATE): "oidc_connector.updated",
    (Kind.OIDC_CONNECTOR, Action.DELETE): "oidc_connector.deleted",
    (Kind.GITHUB_CONNECTOR, Action.CREATE): "github_connector.created",
    (Kind.GITHUB_CONNECTOR, Action.UPDATE): "github_connector.updated",
    (Kind.GITHUB_CONNECTOR, Action.DELETE): "github_connector.deleted",
}


def change_event_type(kind: Kind, action: Action) -> str | None:
    return _EVENTS.get((kind, action))
