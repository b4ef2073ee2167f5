"""Who may change a stored object, and how a refusal says where to change it instead.

Every stored resource records its origin (``limen.dev/origin``: ``git``, ``kubernetes``,
``api``); a source changes or deletes only what it owns, unless the object carries
``limen.dev/adopt: <origin>``. An object of origin ``preset`` (auth's preset roles) is
anyone's to take over or delete. ``object_label`` names an object the way every user-facing
message of the store does (``user 'alice'``). Called by ``limen.services.admin``,
``limen.services.resource_store`` and the auth server's user operations (``lmctl users ...``).
"""

from __future__ import annotations

from limen.api.resources import ADOPT_ANNOTATION, Kind, Origin, Resource
from limen.errors import AccessDenied

__all__ = ["check_owner", "kind_label", "object_label", "owner_allows", "owner_refusal"]

_KIND_LABELS = {
    Kind.TRUSTED_CLUSTER: "trusted cluster", Kind.REMOTE_CLUSTER: "remote cluster",
    Kind.CERT_AUTHORITY: "certificate authority",
}

_WHERE = {
    Origin.GIT: "it comes from the Git repository the cluster syncs: change it there and "
                "commit",
    Origin.KUBERNETES: "it comes from Kubernetes: change its custom resource there "
                       "(kubectl apply, or the Argo CD/Flux source that declares it)",
    Origin.API: "it was made with lmctl or the API: change it with lmctl",
}


def kind_label(kind: Kind) -> str:
    """``user``, ``role``, ``trusted cluster``: a kind as a sentence names it."""
    return _KIND_LABELS.get(kind, kind.value.lower())


def object_label(kind: Kind, name: str) -> str:
    """``user 'alice'``."""
    return f"{kind_label(kind)} {name!r}"


def owner_allows(current: Resource, desired: Resource | None, origin: Origin) -> bool:
    """Whether ``origin`` may change (or, with ``desired`` None, delete) ``current``."""
    if current.origin in (None, origin, Origin.PRESET):  # a preset is anyone's to take over
        return True
    adopt = current.annotations.get(ADOPT_ANNOTATION)
    if desired is not None and adopt is None:
        adopt = desired.annotations.get(ADOPT_ANNOTATION)
    return adopt == origin.value


def owner_refusal(current: Resource, origin: Origin, verb: str = "change") -> AccessDenied:
    """The refusal for ``origin`` acting on an object another origin owns, saying where to
    change it: ``user 'alice' is owned by git, not api: it comes from the Git repository ...``."""
    owner = current.origin
    where = _WHERE.get(owner, "") if owner is not None else ""
    return AccessDenied(
        f"cannot {verb} {object_label(current.kind, current.name)}: it is owned by origin "
        f"{owner}, not {origin.value}; {where} (or hand it over with the annotation "
        f"{ADOPT_ANNOTATION}: {origin.value})"
    )


def check_owner(current: Resource, origin: Origin, verb: str = "change") -> None:
    """Raise :func:`owner_refusal` unless ``origin`` may act on ``current``."""
    if not owner_allows(current, None, origin):
        raise owner_refusal(current, origin, verb)
