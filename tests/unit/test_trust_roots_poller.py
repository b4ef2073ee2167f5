"""Trust for a node or proxy running apart from auth: the auth endpoint
``GET /v1/trust/roots`` (``limen.auth.http.trust_leaf``) and its poller
``limen.trust.roots_poller.RemoteTrustCache``.

The endpoint runs in a real leaf ``AuthService`` (mutual TLS on 127.0.0.1) whose store holds
root CAs as the reconciler writes them: only system identities of the leaf get an answer
(users are refused), only enabled roots are in it, and it carries no private key. The cache is
tested against that endpoint (changes followed: disable, delete, role_map, own CA rotation) and
against a scripted client with a fake clock (auth unreachable: last answer kept for
``max_stale``, then no root trusted; malformed roots ignored).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.auth.http.trust_leaf import TRUST_ROOTS_PATH
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.x509_certs import certificate_to_pem, sign_client_cert
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied, BadParameter, ConnectionProblem
from limen.events.filelog import FileLog
from limen.trust.cache import trusted_role_map
from limen.trust.roots_poller import RemoteTrustCache, parse_root

HOUR = timedelta(hours=1)
ROLE_MAP = [{"remote": "ops", "local": ["visitor"]}]


def _root_cas(name: str) -> dict[CertAuthorityType, CertAuthority]:
    return {t: CertAuthority.generate(name, t) for t in (
        CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)}


@dataclass
class Leaf:
    service: AuthService
    roots: dict[str, dict[CertAuthorityType, CertAuthority]]

    @property
    def auth(self) -> Any:
        return self.service.server

    async def trust(self, tc_name: str, root: str, *, enabled: bool = True,
                    ca_disabled: bool = False, role_map: list[Any] | None = None) -> None:
        """A TrustedCluster and its root's CAs, as the reconciler stores them."""
        doc = {"apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
               "metadata": {"name": tc_name},
               "spec": {"enabled": enabled, "proxy_address": f"{root}.example:3080",
                        "token_secret_ref": {"file": "nonexistent"},
                        "role_map": ROLE_MAP if role_map is None else role_map}}
        await self.auth.apply(validate([SourceDocument("t", 0, 1, doc)]), Origin.API,
                              actor="admin")
        cas = self.roots.setdefault(root, _root_cas(root))
        for ca_type, ca in cas.items():
            spec = ca.public_only().to_dict()
            if ca_disabled:
                spec["disabled"] = True
            await self.auth.store.put(Resource(
                Kind.CERT_AUTHORITY, f"{ca_type.value}.{root}", spec=spec,
                labels={"limen.dev/cluster": root, "limen.dev/trust": "trusted-cluster",
                        "limen.dev/trusted-cluster": tc_name}))

    def client(self, role: SystemRole) -> AuthClient:
        return AuthClient(self.service.address,
                          self.service.issue_local_credentials(role, ["127.0.0.1"]))

    def user_client(self, name: str = "alice") -> AuthClient:
        """A user of the leaf with a valid client certificate (and admin-like rules)."""
        key = generate_private_key()
        cert = sign_client_cert(self.auth.authorities.get(CertAuthorityType.TLS),
                                key.public_key(), Identity(name, "leaf", roles=("admin",)),
                                HOUR)
        creds = HostCredentials(
            cluster="leaf", host_id=name, role="", private_key_pem=private_key_to_pem(
                key).encode(), tls_cert_pem=certificate_to_pem(cert).encode(),
            tls_ca_pem=self.auth.authorities.get(CertAuthorityType.TLS).pem_bundle().encode())
        return AuthClient(self.service.address, creds)


@pytest.fixture
async def leaf(tmp_path: Path) -> AsyncIterator[Leaf]:
    log = FileLog(tmp_path / "events")
    settings = Settings(data_dir=tmp_path, cluster=ClusterSettings(name="leaf"),
                        listeners=Listeners(auth="127.0.0.1:0"))
    service = AuthService(settings, MemoryBackend(), log)
    await service.start()
    try:
        yield Leaf(service, {})
    finally:
        await service.stop()
        log.close()


# ---------------------------------------------------------------------- the endpoint


async def test_node_and_proxy_get_only_the_enabled_roots_and_no_private_key(leaf: Leaf
                                                                            ) -> None:
    await leaf.trust("org-a", "root")
    await leaf.trust("org-b", "other", enabled=False)
    await leaf.trust("org-c", "third", ca_disabled=True)
    for role in (SystemRole.NODE, SystemRole.PROXY):
        async with leaf.client(role) as client:
            answer = await client.call("GET", TRUST_ROOTS_PATH)
        assert answer["cluster"] == "leaf"
        assert [r["root_cluster"] for r in answer["roots"]] == ["root"]
        root = answer["roots"][0]
        assert root["trusted_cluster"] == "org-a"
        assert root["role_map"] == ROLE_MAP
        assert root["proxy_address"] == "root.example:3080"
        assert set(root["cas"]) == {"user", "host", "tls"}
        text = json.dumps(answer)
        assert "private_key" not in text
        assert "PRIVATE KEY" not in text
        for ca_type, ca in leaf.roots["root"].items():
            sent = CertAuthority.from_dict(root["cas"][ca_type.value])
            assert sent.trusted_public_keys() == ca.trusted_public_keys()
            assert not sent.has_private_key
        own = leaf.auth.authorities.get(CertAuthorityType.USER)
        assert CertAuthority.from_dict(answer["user_ca"]).trusted_public_keys() == \
            own.trusted_public_keys()


async def test_users_are_refused_even_with_rules(leaf: Leaf) -> None:
    await leaf.trust("org-a", "root")
    await leaf.auth.apply(validate([SourceDocument("r", 0, 1, {
        "apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "admin"},
        "spec": {"allow": {"rules": [{"resources": ["*"], "verbs": ["*"]}]}}})]),
        Origin.API, actor="admin")
    async with leaf.user_client() as client:
        with pytest.raises(AccessDenied, match="may not call"):
            await client.call("GET", TRUST_ROOTS_PATH)


async def test_an_unchanged_revision_gets_a_short_answer(leaf: Leaf) -> None:
    await leaf.trust("org-a", "root")
    async with leaf.client(SystemRole.NODE) as client:
        first = await client.call("GET", TRUST_ROOTS_PATH)
        same = await client.call("GET", TRUST_ROOTS_PATH,
                                 params={"revision": first["revision"]})
        assert same == {"cluster": "leaf", "revision": first["revision"], "unchanged": True}
        await leaf.trust("org-a", "root", role_map=[{"remote": "dev", "local": ["visitor"]}])
        changed = await client.call("GET", TRUST_ROOTS_PATH,
                                    params={"revision": first["revision"]})
    assert changed["revision"] != first["revision"]
    assert changed["roots"][0]["role_map"] == [{"remote": "dev", "local": ["visitor"]}]


# ---------------------------------------------------------------------- the cache, live


async def test_the_cache_follows_disable_role_map_and_delete(leaf: Leaf) -> None:
    await leaf.trust("org-a", "root")
    async with leaf.client(SystemRole.NODE) as client:
        async def give() -> AuthClient:
            return client

        own = leaf.auth.authorities.get(CertAuthorityType.USER)
        cache = RemoteTrustCache(give, "leaf", own.ssh_public_keys())
        alice = Identity("alice", "root", roles=("ops", "dev"))
        assert cache.user_cas() == []  # deny by default before the first answer
        assert await cache.refresh()
        assert list(cache.roots) == ["root"]
        root_user = leaf.roots["root"][CertAuthorityType.USER]
        assert cache.ssh_user_trust() == {"leaf": own.trusted_public_keys(),
                                          "root": root_user.trusted_public_keys()}
        roles = trusted_role_map(cache)
        assert roles(alice) == ["visitor"]
        assert roles(Identity("eve", "leaf", roles=("ops",))) == []  # own users: not mapped
        assert cache.roots["root"].host_ca is not None
        assert cache.roots["root"].tls_ca is not None

        await leaf.trust("org-a", "root", role_map=[{"remote": "dev", "local": ["guest"]}])
        assert await cache.refresh()
        assert roles(alice) == ["guest"]

        waiter = cache.wait_changed(5.0)
        await leaf.trust("org-a", "root", enabled=False)
        assert await cache.refresh()
        assert await waiter
        assert cache.roots == {}
        assert cache.ssh_user_trust() == {"leaf": own.trusted_public_keys()}
        assert roles(alice) == []

        await leaf.trust("org-a", "root")
        assert await cache.refresh()
        assert list(cache.roots) == ["root"]
        await leaf.auth.remove(Kind.TRUSTED_CLUSTER, "org-a", Origin.API, actor="admin")
        assert await cache.refresh()
        assert cache.roots == {}


# ---------------------------------------------------------------------- the cache, scripted


class Script:
    """An AuthClient stand-in: answers from a list (an exception is raised)."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.calls: list[dict[str, Any]] = []

    async def call(self, method: str, path: str, body: Any = None, params: Any = None,
                   **_: Any) -> Any:
        self.calls.append({"method": method, "path": path, "params": params})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _answer(roots: list[dict[str, Any]], *, revision: str = "r1",
            user_ca: CertAuthority | None = None) -> dict[str, Any]:
    own = user_ca or CertAuthority.generate("leaf", CertAuthorityType.USER)
    return {"cluster": "leaf", "revision": revision, "roots": roots,
            "user_ca": own.public_only().to_dict()}


def _root_doc(name: str = "root", cas: dict[CertAuthorityType, CertAuthority] | None = None,
              **extra: Any) -> dict[str, Any]:
    cas = cas or _root_cas(name)
    return {"trusted_cluster": name, "root_cluster": name, "proxy_address": "r:3080",
            "tunnel_address": "", "role_map": ROLE_MAP,
            "cas": {t.value: ca.public_only().to_dict() for t, ca in cas.items()}, **extra}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(script: Script, clock: Callable[[], float], keys: tuple[str, ...] = ()
           ) -> RemoteTrustCache:
    async def give() -> Any:
        return script

    own = keys or CertAuthority.generate("leaf", CertAuthorityType.USER).ssh_public_keys()
    return RemoteTrustCache(give, "leaf", own, max_stale=60.0, clock=clock)


async def test_auth_unreachable_keeps_the_last_answer_then_trusts_only_the_own_cluster(
        ) -> None:
    script, clock = Script(), Clock()
    cache = _cache(script, clock)
    script.answers = [_answer([_root_doc()]), ConnectionProblem("down"),
                      ConnectionProblem("down"), {"cluster": "leaf", "revision": "r1",
                                                  "unchanged": True}]
    assert await cache.refresh()
    assert list(cache.roots) == ["root"]
    clock.now += 30
    assert not await cache.refresh()
    assert list(cache.roots) == ["root"]  # within max_stale: kept
    clock.now += 31  # 61 s since the last answer: stale even before the next poll fails
    assert cache.roots == {}
    assert set(cache.ssh_user_trust()) == {"leaf"}
    assert cache.role_names(Identity("alice", "root", roles=("ops",))) == []
    waiter = cache.wait_changed(5.0)
    assert not await cache.refresh()
    assert await waiter  # the links are told
    # the stale state was forgotten: the next poll asks for everything, not "unchanged"
    script.answers = [_answer([_root_doc()], revision="r2")]
    assert await cache.refresh()
    assert script.calls[-1]["params"] is None
    assert list(cache.roots) == ["root"]


async def test_the_next_poll_sends_the_revision_and_unchanged_keeps_the_roots() -> None:
    script, clock = Script(), Clock()
    cache = _cache(script, clock)
    script.answers = [_answer([_root_doc()]), {"cluster": "leaf", "revision": "r1",
                                               "unchanged": True}]
    assert await cache.refresh()
    clock.now += 50
    assert await cache.refresh()
    assert script.calls[-1]["params"] == {"revision": "r1"}
    clock.now += 50  # 100 s after the first answer, 50 s after the "unchanged" one
    assert list(cache.roots) == ["root"]


async def test_an_answer_for_another_cluster_is_a_failure() -> None:
    script, clock = Script(), Clock()
    cache = _cache(script, clock)
    wrong = _answer([_root_doc()])
    wrong["cluster"] = "elsewhere"
    script.answers = [wrong]
    assert not await cache.refresh()
    assert cache.roots == {}


async def test_own_user_ca_rotation_is_followed() -> None:
    script, clock = Script(), Clock()
    first = CertAuthority.generate("leaf", CertAuthorityType.USER)
    cache = _cache(script, clock, first.ssh_public_keys())
    assert cache.ssh_user_trust()["leaf"] == first.trusted_public_keys()
    rotated = first.rotate()
    script.answers = [_answer([], user_ca=rotated)]
    assert await cache.refresh()
    assert cache.ssh_user_trust()["leaf"] == rotated.trusted_public_keys()
    assert len(rotated.trusted_public_keys()) == 2


async def test_malformed_roots_are_ignored_and_the_good_ones_kept() -> None:
    script, clock = Script(), Clock()
    cache = _cache(script, clock)
    secret = _root_cas("leaky")
    leaky = _root_doc("leaky", secret)
    leaky["cas"]["user"] = secret[CertAuthorityType.USER].to_dict()  # with its private key
    other = _root_cas("other")
    swapped = _root_doc("swapped", {CertAuthorityType.USER: other[CertAuthorityType.USER]})
    script.answers = [_answer([_root_doc(), leaky, swapped, _root_doc("leaf"),
                               _root_doc("badmap", role_map=[{"remote": "(", "local": []}])])]
    assert await cache.refresh()
    assert list(cache.roots) == ["root"]


def test_parse_root_refuses_private_keys_foreign_cas_and_the_own_name() -> None:
    cas = _root_cas("root")
    good = parse_root(_root_doc("root", cas), "leaf")
    assert good.user_ca.trusted_public_keys() == cas[CertAuthorityType.USER].trusted_public_keys()
    assert good.role_map[0].local == ("visitor",)
    leaky = _root_doc("root", cas)
    leaky["cas"]["tls"] = cas[CertAuthorityType.TLS].to_dict()
    with pytest.raises(BadParameter, match="private key"):
        parse_root(leaky, "leaf")
    swapped = _root_doc("root", cas)
    swapped["cas"]["user"] = swapped["cas"]["host"]
    with pytest.raises(BadParameter, match="was sent as the user CA"):
        parse_root(swapped, "leaf")
    with pytest.raises(BadParameter, match="own name"):
        parse_root(_root_doc("leaf"), "leaf")
    with pytest.raises(BadParameter, match="no user CA"):
        parse_root({"root_cluster": "root", "cas": {}}, "leaf")
