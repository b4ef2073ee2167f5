"""Access requests at auth, in process on the memory backend with a clock the test moves
(``limen.auth.access_requests``): the states, the reviewer rules, the expiry, the certificates
an approved request gives, and an audit event for every step and refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.api.access_request import RequestState
from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.events.emitter import MemoryEmitter

START = 1_800_000_000.0

DOCS: list[dict[str, Any]] = [
    {"kind": "Role", "metadata": {"name": "requester"},
     "spec": {"allow": {"request": {"roles": ["db-*"], "max_duration": "1h"}}}},
    {"kind": "Role", "metadata": {"name": "reviewer"},
     "spec": {"allow": {"review_requests": {"roles": ["db-admin"]},
                        "request": {"roles": ["db-admin"]}}}},
    {"kind": "Role", "metadata": {"name": "db-admin"},
     "spec": {"options": {"max_session_ttl": "30m"}, "allow": {"logins": ["postgres"]}}},
    {"kind": "Role", "metadata": {"name": "db-root"}, "spec": {"allow": {"logins": ["root"]}}},
    {"kind": "Role", "metadata": {"name": "no-root"},
     "spec": {"deny": {"request": {"roles": ["db-root"]}}}},
    {"kind": "User", "metadata": {"name": "alice"},
     "spec": {"roles": ["requester", "no-root"]}},
    {"kind": "User", "metadata": {"name": "bob"}, "spec": {"roles": ["reviewer"]}},
    {"kind": "User", "metadata": {"name": "carol"}, "spec": {"roles": ["requester"]}},
]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def auth(clock: Clock) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter(),
                        clock=clock)
    await server.start()
    sources = [SourceDocument("t.yaml", i, 1, {"apiVersion": "limen.dev/v1alpha1", **d})
               for i, d in enumerate(DOCS)]
    await server.apply(validate(sources), Origin.API, actor="test")
    return server


def who(name: str) -> Identity:
    return Identity(username=name, cluster="unit", roles=("requester",))


def events(auth: AuthServer, event_type: str) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [e.to_dict() for e in auth.emitter.events if e.type == event_type]


def _key() -> str:
    return public_key_to_openssh(generate_private_key().public_key())


async def test_create_approve_and_certificates_with_the_roles(auth: AuthServer) -> None:
    created = await auth.access_requests.create(who("alice"), ["db-admin"], "INC-42")
    assert created.state is RequestState.PENDING
    # 30m: the max_session_ttl of the requested role caps the role's max_duration of 1h
    assert created.expires - created.created == timedelta(minutes=30)
    [event] = events(auth, "access_request.create")
    assert event["request_id"] == created.id
    assert event["code"] == "L1100I"
    approved = await auth.access_requests.review(who("bob"), created.id, True, "ok")
    assert approved.state is RequestState.APPROVED
    assert [(r.author, r.state) for r in approved.reviews] == [("bob", RequestState.APPROVED)]
    assert events(auth, "access_request.review")[0]["state"] == "APPROVED"

    user = await auth.store.get(Kind.USER, "alice")
    certs = await auth.issue_for_user(user, _key(), None, request_id=created.id)
    assert set(certs.identity.roles) == {"requester", "no-root", "db-admin"}
    assert certs.identity.logins == ("postgres",)
    assert certs.identity.access_requests == (created.id,)
    assert certs.expires <= created.expires
    [use] = events(auth, "access_request.use")
    assert use["code"] == "L1102I"
    plain = await auth.issue_for_user(user, _key(), None)
    assert plain.identity.logins == ()
    assert plain.identity.access_requests == ()


async def test_self_review_and_reviewer_without_review_requests_are_refused(
        auth: AuthServer) -> None:
    created = await auth.access_requests.create(who("alice"), ["db-admin"], None)
    with pytest.raises(AccessDenied, match="their own"):
        await auth.access_requests.review(who("alice"), created.id, True, None)
    with pytest.raises(AccessDenied, match="may not review"):
        await auth.access_requests.review(who("carol"), created.id, True, None)
    refusals = events(auth, "access_request.review")
    assert [e["code"] for e in refusals] == ["L1101W", "L1101W"]
    assert [e["user"] for e in refusals] == ["alice", "carol"]
    mine = await auth.access_requests.create(who("bob"), ["db-admin"], None)
    with pytest.raises(AccessDenied, match="their own"):  # a reviewer cannot approve their own
        await auth.access_requests.review(who("bob"), mine.id, True, None)


async def test_requests_no_role_allows_or_a_deny_forbids_are_refused(auth: AuthServer) -> None:
    with pytest.raises(AccessDenied, match="no role allows requesting role 'ops'"):
        await auth.access_requests.create(who("bob"), ["ops"], None)
    with pytest.raises(AccessDenied, match="denies requesting role 'db-root'"):
        await auth.access_requests.create(who("alice"), ["db-root"], None)
    with pytest.raises(NotFound):
        await auth.access_requests.create(who("alice"), ["db-missing"], None)
    with pytest.raises(BadParameter):
        await auth.access_requests.create(who("alice"), [], None)
    assert [e["code"] for e in events(auth, "access_request.create")] == ["L1100W"] * 4


async def test_a_denied_request_cannot_be_approved_nor_used(auth: AuthServer) -> None:
    created = await auth.access_requests.create(who("alice"), ["db-admin"], None)
    denied = await auth.access_requests.review(who("bob"), created.id, False, "no")
    assert denied.state is RequestState.DENIED
    with pytest.raises(AccessDenied, match="is DENIED"):
        await auth.access_requests.review(who("bob"), created.id, True, None)
    user = await auth.store.get(Kind.USER, "alice")
    with pytest.raises(AccessDenied, match="not APPROVED"):
        await auth.issue_for_user(user, _key(), None, request_id=created.id)
    assert events(auth, "access_request.use")[-1]["code"] == "L1102W"


async def test_expiry_refuses_approval_and_login(auth: AuthServer, clock: Clock) -> None:
    pending = await auth.access_requests.create(who("alice"), ["db-admin"], None)
    approved = await auth.access_requests.create(who("alice"), ["db-admin"], None)
    await auth.access_requests.review(who("bob"), approved.id, True, None)
    user = await auth.store.get(Kind.USER, "alice")
    clock.now += 10 * 60
    certs = await auth.issue_for_user(user, _key(), None, request_id=approved.id)
    assert certs.expires == approved.expires  # the request's end, not the role's 30m TTL
    clock.now += 30 * 60
    with pytest.raises(AccessDenied, match="EXPIRED"):
        await auth.access_requests.review(who("bob"), pending.id, True, None)
    with pytest.raises(AccessDenied, match="EXPIRED"):
        await auth.issue_for_user(user, _key(), None, request_id=approved.id)
    assert {e["request_id"] for e in events(auth, "access_request.expire")} == {
        pending.id, approved.id}


async def test_tampered_or_foreign_request_ids_are_refused(auth: AuthServer) -> None:
    created = await auth.access_requests.create(who("alice"), ["db-admin"], None)
    await auth.access_requests.review(who("bob"), created.id, True, None)
    carol = await auth.store.get(Kind.USER, "carol")
    with pytest.raises(AccessDenied, match="not carol's"):
        await auth.issue_for_user(carol, _key(), None, request_id=created.id)
    alice = await auth.store.get(Kind.USER, "alice")
    for forged in (created.id[:-1] + ("0" if created.id[-1] != "0" else "1"), "../x", ""):
        with pytest.raises(AccessDenied):
            await auth.issue_for_user(alice, _key(), None, request_id=forged)
    assert [e["code"] for e in events(auth, "access_request.use")] == ["L1102W"] * 4


async def test_listing_shows_own_and_reviewable_requests(auth: AuthServer) -> None:
    mine = await auth.access_requests.create(who("alice"), ["db-admin"], None)
    other = await auth.access_requests.create(who("carol"), ["db-admin"], None)
    assert {r.id for r in await auth.access_requests.list(who("alice"))} == {mine.id}
    assert {r.id for r in await auth.access_requests.list(who("bob"))} == {mine.id, other.id}
    admin = Identity(username="admin", cluster="unit", system_role=SystemRole.ADMIN)
    assert len(await auth.access_requests.list(admin)) == 2
    with pytest.raises(NotFound):
        await auth.access_requests.get(who("alice"), other.id)


async def test_a_password_login_carries_an_approved_request(clock: Clock) -> None:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit", second_factor="off"),
                        MemoryEmitter(), clock=clock)
    await server.start()
    await server.set_proxy_address("proxy.example.com:3080")
    sources = [SourceDocument("t.yaml", i, 1, {"apiVersion": "limen.dev/v1alpha1", **d})
               for i, d in enumerate(DOCS) if d["kind"] == "Role"]
    await server.apply(validate(sources), Origin.API, actor="test")
    await server.add_user("bob", ["reviewer"], [], actor="admin")
    _user, url = await server.add_user("dana", ["requester"], [], actor="admin")
    await server.signup(url.rsplit("/", 1)[-1].split("?")[0], "dana-correct-horse-1")
    created = await server.access_requests.create(who("dana"), ["db-admin"], None)
    await server.access_requests.review(who("bob"), created.id, True, None)
    result = await server.login("dana", "dana-correct-horse-1", None, _key(), None,
                                request_id=created.id)
    assert result.certs.identity.access_requests == (created.id,)
    assert "db-admin" in result.certs.identity.roles
    [login] = events(server, "user.login")
    assert login["access_requests"] == [created.id]
