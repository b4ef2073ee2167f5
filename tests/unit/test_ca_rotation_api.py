"""The rotate route of the auth API (limen.auth.http.rotation), over real mutual TLS: an admin
moves the phase; a user (even with rules), a node agent or a proxy calling it is refused with
403, and each refusal is audited as ca.rotation with success false."""

from __future__ import annotations

from pathlib import Path

from auth_api_identities import alice_credentials, host_credentials, running_auth, statuses

from limen.auth.rotation import Phase
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.events.emitter import MemoryEmitter

ROTATE = [("POST", "/v1/authorities/user/rotate")]


async def test_only_admins_rotate_and_refusals_are_audited(tmp_path: Path) -> None:
    async with running_auth(tmp_path) as auth:
        emitter = auth.server.emitter
        assert isinstance(emitter, MemoryEmitter)
        callers = {"alice": alice_credentials(auth),
                   "node": host_credentials(auth, "node-1", SystemRole.NODE),
                   "proxy": host_credentials(auth, "proxy-1", SystemRole.PROXY)}
        for name, creds in callers.items():
            assert await statuses(auth, creds, ROTATE, {"manual": True}) == \
                {ROTATE[0][1]: 403}, name
        assert auth.server.authorities.rotation(CertAuthorityType.USER).phase is Phase.STANDBY
        refused = [e for e in emitter.events if e.type.value == "ca.rotation"]
        assert [(e.success, e.user) for e in refused] == [
            (False, "alice"), (False, "node-1"), (False, "proxy-1")]
        assert all("may not call" in e.fields["reason"] for e in refused)
        admin = HostCredentials.load(auth.settings.data_dir / "admin")
        assert await statuses(auth, admin, ROTATE, {"manual": True}) == {ROTATE[0][1]: 200}
        assert auth.server.authorities.rotation(CertAuthorityType.USER).phase is Phase.INIT
        done = [e for e in emitter.events if e.type.value == "ca.rotation" and e.success]
        assert [(e.user, e.fields["from"], e.fields["to"]) for e in done] == [
            ("admin", "standby", "init")]
