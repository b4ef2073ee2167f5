"""The proxy's schedule for pushing auth's signed trust answer (``limen.proxy.trust_push``),
with a scripted auth and a fake clock: the full answer is pushed when its revision changes and
kept for agents registering later (re-fetched every ``refresh`` s), a keepalive is pushed
every ``keepalive`` s, a keepalive of another revision makes the next request fetch the full
answer, and another cluster's answer is refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.ssh_certs import sign_host_cert
from limen.errors import BadParameter
from limen.proxy.trust_push import TrustPusher
from limen.tunnel.protocol import TrustPush
from limen.tunnel.server import TunnelServer


class Script:
    """Auth's answers, one per call; the calls' params recorded."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.params: list[Any] = []

    async def call(self, method: str, path: str, params: Any = None) -> Any:
        self.params.append(params)
        return self.answers.pop(0)


class Recorder(TunnelServer):
    """The real tunnel server (not listening), recording what it is asked to send."""

    def __init__(self, credentials: HostCredentials) -> None:
        super().__init__(credentials)
        self.sent: list[str] = []
        self.kept: list[str] = []

    def keep_trust(self, message: TrustPush) -> None:
        super().keep_trust(message)
        self.kept.append(str(message.doc["revision"]))

    async def publish_trust(self, message: TrustPush, *, batch: int = 256) -> int:
        kind = "full" if message.doc.get("answer") else "keepalive"
        self.sent.append(f"{kind} {message.doc['revision']}")
        return await super().publish_trust(message, batch=batch)


def _full(revision: str, cluster: str = "leaf") -> dict[str, Any]:
    return {"cluster": cluster, "revision": revision, "answer": "{...}"}


def _keepalive(revision: str) -> dict[str, Any]:
    return {"cluster": "leaf", "revision": revision, "answer": ""}


@pytest.fixture
def tunnel() -> Recorder:
    ca = CertAuthority.generate("leaf", CertAuthorityType.HOST)
    key = generate_private_key()
    creds = HostCredentials(
        cluster="leaf", host_id="proxy-1", role="proxy", hostname="proxy-1",
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=b"", tls_ca_pem=b"",
        ssh_cert=sign_host_cert(ca, key.public_key(), "proxy-1", "proxy-1", [],
                                timedelta(hours=1), SystemRole.PROXY),
        host_ca_keys=tuple(ca.ssh_public_keys()))
    return Recorder(creds)


async def test_full_on_change_keepalive_on_schedule_refresh_for_newcomers(
        tunnel: Recorder) -> None:
    script, now = Script(), [100.0]
    pusher = TrustPusher(script, tunnel, "leaf", refresh=10.0,  # type: ignore[arg-type]
                         keepalive=10.0, clock=lambda: now[0])
    script.answers = [_full("r1"), _keepalive("r1"), _full("r1"), _keepalive("r1"),
                      _keepalive("r2"), _full("r2")]
    assert await pusher.push_once() == "full"
    now[0] += 1
    assert await pusher.push_once() == ""  # a keepalive 1 s after the answer: not due
    now[0] += 9
    assert await pusher.push_once() == ""  # the full answer re-fetched: kept, not sent
    now[0] += 0.5
    assert await pusher.push_once() == "keepalive"  # 10.5 s since the last push
    now[0] += 1
    assert await pusher.push_once() == ""  # auth moved to r2: fetch the full answer next
    assert await pusher.push_once() == "full"
    assert script.params == [None, {"revision": "r1"}, None, {"revision": "r1"},
                             {"revision": "r1"}, None]
    assert tunnel.sent == ["full r1", "keepalive r1", "full r2"]
    assert tunnel.kept == ["r1", "r1", "r2"]


async def test_another_clusters_answer_is_not_pushed(tunnel: Recorder) -> None:
    script = Script()
    pusher = TrustPusher(script, tunnel, "leaf")  # type: ignore[arg-type]
    script.answers = [_full("r1", cluster="other")]
    with pytest.raises(BadParameter):
        await pusher.push_once()
    assert tunnel.sent == []
    assert tunnel.kept == []
