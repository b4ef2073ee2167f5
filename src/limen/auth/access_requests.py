"""Access requests at auth: create, list, review, and the approved request a login uses.

::

    alice: lmsh request create --roles db-admin ──▶ create()  PENDING, audited
    bob:   lmsh request review ID --approve     ──▶ review()  APPROVED (one approval), audited
    alice: lmsh login --request-id ID            ──▶ approved_for() ──▶ certificates with
                                                     alice's roles + db-admin until expires

Rules (``limen.rbac.access_requests`` decides on roles):

- a user may request only roles that one of *their own* roles (the User record's, never a
  certificate's: an elevation cannot be chained) allows requesting and none denies;
- a request lasts the smallest ``max_duration`` among the roles allowing it, capped by the
  session TTL of the user's roles together with the requested ones;
- a reviewer needs a role whose ``review_requests`` covers every requested role; nobody
  reviews their own request; only a PENDING request can be reviewed; one approval
  (:data:`APPROVAL_THRESHOLD`) approves, one denial denies;
- only the requester can log in with an approved request, and only until it expires.

A review can also be a merged Git commit (``limen.gitops.reviews``): the same
:meth:`AccessRequests.review` with the merger's identity and the commit, which the review and
its audit event record (``via: git``, ``commit``); a commit already recorded in the request is
not reviewed again.

Every step and every refusal is an audit event (``access_request.create``, ``.review``,
``.use``, ``.expire``). Created by ``limen.auth.core.AuthServer``; called by its login and
by the auth API (``limen.auth.http.requests``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from limen.api.access_request import (
    AccessRequest,
    RequestState,
    Review,
    check_reason,
    check_request_id,
    new_request_id,
)
from limen.api.resources import Kind, Resource
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied, BadParameter, CompareFailed, LimenError, NotFound
from limen.rbac.access_requests import check_request, check_review
from limen.rbac.roleset import RoleSet

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["APPROVAL_THRESHOLD", "MAX_ROLES", "RETENTION", "AccessRequests"]

APPROVAL_THRESHOLD = 1
"""Approvals that approve a request (Teleport's default threshold)."""
MAX_ROLES = 16
"""Most roles one request may ask for."""
RETENTION = timedelta(days=7)
"""How long a request stays listed after its expiry (the audit log keeps its history)."""
_CAS_ATTEMPTS = 3


class AccessRequests:
    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    # -- reading ------------------------------------------------------------------------------
    async def _get(self, request_id: str) -> AccessRequest:
        found = await self.auth.store.find(Kind.ACCESS_REQUEST, check_request_id(request_id))
        if found is None:
            raise NotFound(f"no access request {request_id}")
        return await self._settled(AccessRequest.from_resource(found))

    async def _settled(self, request: AccessRequest) -> AccessRequest:
        """``request`` with its expiry applied: an expired request is stored EXPIRED once
        (audited by whichever replica writes it first)."""
        state = request.state_at(self.auth.now())
        if state is request.state:
            return request
        expired = request.with_state(state)
        try:
            stored = await self.auth.store.update(expired.to_resource(),
                                                  expires=_kept_until(expired))
        except CompareFailed:  # another call settled or reviewed it: read it again
            return await self._get(request.id)
        await self.auth.emit("access_request.expire", user=request.user,
                             request_id=request.id, roles=list(request.roles))
        return AccessRequest.from_resource(stored)

    async def _user_roles(self, name: str) -> list[Resource]:
        """The roles of the User record (never a certificate's, which may be elevated)."""
        return await self.auth.roles_of(await self.auth.store.get(Kind.USER, name))

    async def get(self, identity: Identity, request_id: str) -> AccessRequest:
        """One request, for its requester, a user who may review it, or an admin."""
        request = await self._get(request_id)
        if not await self._may_see(identity, request):
            raise NotFound(f"no access request {request_id}")
        return request

    async def list(self, identity: Identity) -> list[AccessRequest]:
        """The caller's requests and those the caller may review (admins: all), newest
        first."""
        if identity.is_system and identity.system_role is not SystemRole.ADMIN:
            return []
        reviewer_roles = [] if identity.is_system else await self._user_roles(identity.username)
        out = []
        for resource in await self.auth.store.list(Kind.ACCESS_REQUEST):
            request = await self._settled(AccessRequest.from_resource(resource))
            if identity.system_role is SystemRole.ADMIN or request.user == identity.username \
                    or check_review(reviewer_roles, request.roles).allowed:
                out.append(request)
        return sorted(out, key=lambda r: (r.created, r.id), reverse=True)

    async def _may_see(self, identity: Identity, request: AccessRequest) -> bool:
        if identity.system_role is SystemRole.ADMIN or request.user == identity.username:
            return True
        if identity.is_system:
            return False
        return check_review(await self._user_roles(identity.username), request.roles).allowed

    # -- creating -----------------------------------------------------------------------------
    async def create(self, identity: Identity, roles: Sequence[str],
                     reason: str | None) -> AccessRequest:
        if identity.is_system:
            raise AccessDenied("only users request roles")
        user = identity.username
        try:
            wanted = _role_names(roles)
            text = check_reason(reason)
            held = await self._user_roles(user)
            decision = check_request(held, wanted)
            if not decision.allowed:
                raise AccessDenied(f"{user} may not request {', '.join(wanted)}: "
                                   f"{decision.decision.reason}")
            requested = [await self.auth.store.get(Kind.ROLE, name) for name in wanted]
        except LimenError as err:
            await self.auth.emit("access_request.create", success=False, user=user,
                                 roles=list(roles)[:MAX_ROLES], reason=str(err))
            raise
        session_ttl = RoleSet.from_roles([*held, *requested], None).options.max_session_ttl
        duration = min(decision.max_duration or session_ttl, session_ttl)
        now = self.auth.now()
        request = AccessRequest(
            id=new_request_id(), user=user, roles=tuple(wanted), reason=text,
            state=RequestState.PENDING, created=now, expires=now + duration)
        stored = await self.auth.store.create(request.to_resource(),
                                              expires=_kept_until(request))
        await self.auth.emit("access_request.create", user=user, request_id=request.id,
                             roles=list(wanted), request_reason=text,
                             expires=request.expires.isoformat(),
                             decided_by=decision.decision.reason)
        return AccessRequest.from_resource(stored)

    # -- reviewing ----------------------------------------------------------------------------
    async def review(self, identity: Identity, request_id: str, approve: bool,
                     reason: str | None, *, commit: str = "") -> AccessRequest:
        """Approve or deny ``request_id`` as ``identity``; ``commit``: the Git commit that
        merged this review (``limen.gitops.reviews``): recorded in the review and the audit
        event, and a request that already holds a review of that commit is returned as is."""
        author = identity.username
        wanted = RequestState.APPROVED if approve else RequestState.DENIED
        via: dict[str, Any] = {"via": "git", "commit": commit} if commit else {}
        for _attempt in range(_CAS_ATTEMPTS):
            try:
                request = await self._get(request_id)
                if commit and any(r.commit == commit for r in request.reviews):
                    return request  # this merge was applied before (a restart, a re-sync)
                text = check_reason(reason)
                await self._check_reviewer(identity, request, wanted)
            except LimenError as err:
                await self.auth.emit("access_request.review", success=False, user=author,
                                     request_id=str(request_id)[:80], state=wanted.value,
                                     reason=str(err), **via)
                raise
            review = Review(author, wanted, text, self.auth.now().isoformat(), commit)
            approvals = 1 + sum(r.state is RequestState.APPROVED for r in request.reviews)
            state = RequestState.DENIED if not approve else (
                RequestState.APPROVED if approvals >= APPROVAL_THRESHOLD
                else RequestState.PENDING)
            try:
                reviewed = request.with_state(state, review)
                stored = await self.auth.store.update(reviewed.to_resource(),
                                                      expires=_kept_until(reviewed))
            except CompareFailed:  # reviewed or expired meanwhile: decide again on the new state
                continue
            await self.auth.emit("access_request.review", user=author, request_id=request.id,
                                 requester=request.user, roles=list(request.roles),
                                 state=state.value, review_reason=text, **via)
            return AccessRequest.from_resource(stored)
        raise CompareFailed(f"access request {request_id} kept changing; try again")

    async def _check_reviewer(self, identity: Identity, request: AccessRequest,
                              wanted: RequestState) -> None:
        if identity.is_system:
            raise AccessDenied("access requests are reviewed by users")
        if identity.username == request.user:
            raise AccessDenied(f"{identity.username} may not review their own access request")
        if request.state is not RequestState.PENDING:
            raise AccessDenied(f"access request {request.id} is {request.state.value} and "
                               f"cannot be {wanted.value.lower()}")
        if any(r.author == identity.username for r in request.reviews):
            raise AccessDenied(f"{identity.username} has already reviewed {request.id}")
        decision = check_review(await self._user_roles(identity.username), request.roles)
        if not decision.allowed:
            raise AccessDenied(f"{identity.username} may not review requests for "
                               f"{', '.join(request.roles)}: {decision.reason}")

    # -- using --------------------------------------------------------------------------------
    async def approved_for(self, user: str, request_id: str) -> AccessRequest:
        """The approved, unexpired request ``request_id`` of ``user`` for a login; a refusal
        is audited (``access_request.use``) and raised as AccessDenied."""
        try:
            request = await self._get(request_id)
            if request.user != user:
                raise AccessDenied(f"access request {request_id} is not {user}'s")
            if request.state is not RequestState.APPROVED:
                raise AccessDenied(f"access request {request_id} is {request.state.value}, "
                                   "not APPROVED")
        except LimenError as err:
            await self.auth.emit("access_request.use", success=False, user=user,
                                 request_id=str(request_id)[:80], reason=str(err))
            if isinstance(err, NotFound | BadParameter):
                raise AccessDenied(f"cannot log in with access request "
                                   f"{str(request_id)[:80]!r}: {err}") from None
            raise
        return request

    async def used(self, request: AccessRequest, certs_expire: datetime) -> None:
        """Audit certificates issued with ``request``'s roles."""
        await self.auth.emit("access_request.use", user=request.user, request_id=request.id,
                             roles=list(request.roles), expires=certs_expire.isoformat())


def _kept_until(request: AccessRequest) -> float:
    """The store drops a request :data:`RETENTION` after its expiry."""
    return (request.expires + RETENTION).timestamp()


def _role_names(roles: Sequence[str]) -> list[str]:
    if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
        raise BadParameter("roles must be a list of role names")
    names = list(dict.fromkeys(r.strip() for r in roles if r.strip()))
    if not names:
        raise BadParameter("request at least one role (--roles)")
    if len(names) > MAX_ROLES:
        raise BadParameter(f"a request may ask for at most {MAX_ROLES} roles")
    return names

