"""CA rotation in the auth server (limen.auth.rotation_service, limen.auth.authorities): the
audited command, what auth signs with in each phase, the stored state two replicas share
(compare-and-swap), and the automatic advance."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest

from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.auth.rotation import Phase, key_fingerprint
from limen.auth.rotation_service import RotationService, rotate_ca
from limen.ca.authority import CertAuthorityType
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.ca.ssh_certs import verify_ssh_user_cert
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter

USER = CertAuthorityType.USER


def _signer_fp(auth: AuthServer, ca_type: CertAuthorityType = USER) -> str:
    return key_fingerprint(ca_type, auth.authorities.get(ca_type).active)


async def _login_signer(auth: AuthServer) -> str:
    """The fingerprint of the user CA key that verifies a fresh login's SSH certificate."""
    user = await auth.store.get(Kind.USER, "alice")  # a user of the demo repository
    key = public_key_to_openssh(generate_private_key().public_key())
    certs = await auth.issue_for_user(user, key, timedelta(minutes=5))
    for pair in auth.authorities.get(USER).key_pairs:
        with contextlib.suppress(AccessDenied):
            verify_ssh_user_cert(certs.ssh_cert, {"unit": (pair.public_key,)})
            return key_fingerprint(USER, pair)
    raise AssertionError("no user CA key verifies the login's certificate")


def _rotations(auth: AuthServer) -> list[dict[str, object]]:
    emitter = auth.emitter
    assert isinstance(emitter, MemoryEmitter)
    return [{"success": e.success, "user": e.user, **e.fields}
            for e in emitter.events if e.type.value == "ca.rotation"]


async def test_manual_rotation_is_audited_and_changes_the_signer(auth: AuthServer) -> None:
    old = _signer_fp(auth)
    state = await rotate_ca(auth, "user", actor="root-admin")
    assert state["phase"] == "init"
    assert state["mode"] == "manual"
    assert _signer_fp(auth) == old  # init: still the old key
    assert len(auth.authorities.get(USER).key_pairs) == 2
    assert auth.status()["ca_rotation"]["user"]["phase"] == "init"
    await rotate_ca(auth, "user", actor="root-admin", phase="update_clients")
    assert _signer_fp(auth) == state["new_key"]
    await rotate_ca(auth, "user", actor="root-admin", phase="update_servers")
    await rotate_ca(auth, "user", actor="root-admin", phase="standby")
    assert [p.public_key for p in auth.authorities.get(USER).key_pairs] == \
        [auth.authorities.get(USER).active.public_key]
    trusted = (await auth.authorities.trusted(USER))["unit"]
    assert [key_fingerprint(USER, p) for p in trusted.key_pairs] == [state["new_key"]]
    assert [(e["from"], e["to"], e["user"]) for e in _rotations(auth)] == [
        ("standby", "init", "root-admin"), ("init", "update_clients", "root-admin"),
        ("update_clients", "update_servers", "root-admin"),
        ("update_servers", "standby", "root-admin")]


async def test_refused_changes_are_audited(auth: AuthServer) -> None:
    for kwargs, reason in (({"phase": "update_servers"}, "may go to init"),
                           ({"rollback": True}, "may go to init")):
        with pytest.raises(BadParameter, match=reason):
            await rotate_ca(auth, "user", actor="mallory", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(BadParameter, match="tls CA is not rotated by phases: every process"):
        await rotate_ca(auth, "tls", actor="mallory")
    await rotate_ca(auth, "host", actor="root-admin")
    with pytest.raises(BadParameter, match="under way"):
        await rotate_ca(auth, "host", actor="root-admin")
    refused = [e for e in _rotations(auth) if e["success"] is False]
    assert len(refused) == 4
    assert all(e["reason"] for e in refused)


async def test_rollback_signs_with_the_old_key_again(auth: AuthServer) -> None:
    old = _signer_fp(auth, CertAuthorityType.HOST)
    await rotate_ca(auth, "host", actor="a")
    await rotate_ca(auth, "host", actor="a", phase="update_clients")
    assert _signer_fp(auth, CertAuthorityType.HOST) != old
    await rotate_ca(auth, "host", actor="a", rollback=True)
    assert _signer_fp(auth, CertAuthorityType.HOST) == old
    await rotate_ca(auth, "host", actor="a", phase="standby")
    assert len(auth.authorities.get(CertAuthorityType.HOST).key_pairs) == 1


async def test_a_second_replica_follows_and_races_lose_cleanly(auth: AuthServer) -> None:
    other = AuthServer(auth.backend, ClusterSettings(name="unit"), MemoryEmitter())
    await other.start()
    await rotate_ca(auth, "user", actor="a")
    await rotate_ca(auth, "user", actor="a", phase="update_clients")
    assert other.authorities.rotation(USER).phase is Phase.STANDBY  # not read yet
    await RotationService(other).step()
    assert other.authorities.rotation(USER).phase is Phase.UPDATE_CLIENTS
    assert _signer_fp(other) == _signer_fp(auth)
    # a replica acting on a stale phase loses the compare-and-swap instead of double-moving
    assert await other.authorities.change_rotation(
        USER, Phase.UPDATE_SERVERS, now=other.now(), expect=Phase.INIT) is None


@pytest.mark.parametrize("ca_type", [USER, CertAuthorityType.DB, CertAuthorityType.JWT],
                         ids=lambda t: t.value)
async def test_auto_mode_advances_by_itself(auth: AuthServer,
                                            ca_type: CertAuthorityType) -> None:
    clock = [auth.clock()]
    auth.clock = lambda: clock[0]
    await rotate_ca(auth, ca_type.value, actor="a", manual=False,
                    grace_period_seconds=3 * 3600)
    service = RotationService(auth)
    await service.step()
    assert auth.authorities.rotation(ca_type).phase is Phase.INIT
    assert auth.status()["ca_rotation"][ca_type.value]["mode"] == "auto"
    for phase in (Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS, Phase.STANDBY):
        clock[0] += 3600
        await service.step()
        assert auth.authorities.rotation(ca_type).phase is phase
    autos = [e for e in _rotations(auth) if e["user"] == "auth"]
    assert [e["to"] for e in autos] == ["update_clients", "update_servers", "standby"]
    assert {e["ca_type"] for e in autos} == {ca_type.value}


@pytest.mark.parametrize("ca_type", [CertAuthorityType.DB, CertAuthorityType.JWT],
                         ids=lambda t: t.value)
async def test_a_second_replica_signs_db_and_jwt_with_the_rotated_key(
        auth: AuthServer, ca_type: CertAuthorityType) -> None:
    other = AuthServer(auth.backend, ClusterSettings(name="unit"), MemoryEmitter())
    await other.start()
    state = await rotate_ca(auth, ca_type.value, actor="a")
    await rotate_ca(auth, ca_type.value, actor="a", phase="update_clients")
    await RotationService(other).step()
    assert other.authorities.rotation(ca_type).phase is Phase.UPDATE_CLIENTS
    assert _signer_fp(other, ca_type) == state["new_key"]


async def test_new_logins_are_signed_by_the_new_key(auth: AuthServer) -> None:
    before = await _login_signer(auth)
    state = await rotate_ca(auth, "user", actor="a")
    assert await _login_signer(auth) == before == state["old_key"]
    await rotate_ca(auth, "user", actor="a", phase="update_clients")
    assert await _login_signer(auth) == state["new_key"]
