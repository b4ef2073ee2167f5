"""Attacks on the SSH proxy behind the web port (ALPN ``limen-ssh-proxy``), performed for real
against one ``limen start`` with raw TLS clients; each is refused with one ``ERR <reason>``
line, the connection closed, an audit event written, and the proxy still serves:

- no client certificate (``auth``, success false, ``via: tls``);
- a Limen process certificate instead of a user's (the cluster's admin certificate);
- a request that is not JSON, one without a port, and one over 8 KiB without a newline
  (``route.failed`` under the user's name);
- a login the user's roles do not allow on the node (``access.denied`` from the SSH front's
  route decision);
- another user's SSH certificate sent for a leaf cluster (``access.denied``);
- a certificate of another cluster: refused in the TLS handshake by OpenSSL, before any
  route sees it (as on the web API), and the proxy still serves.

The expired certificate is refused in tests/unit/test_ssh_tls_route_expired.py (OpenSSL
refuses it in the handshake first).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import ClusterFactory, LimenCluster, LimenUser, wait_for
from integration.ssh_tls_client import (
    HOST,
    LOGIN,
    exchange,
    ops_user,
    request,
    start_site,
    user_credentials,
)

NAME = "tlsatk"


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    return start_site(module_clusters, NAME)


@pytest.fixture(scope="module")
def olga(site: LimenCluster) -> LimenUser:
    return ops_user(site, "olga")


@pytest.fixture(scope="module")
def tess(site: LimenCluster) -> LimenUser:
    user = site.signed_up_user("tess", roles=["ops"], logins=[LOGIN])
    user.login()
    return user


def _events(site: LimenCluster, event_type: str, reason: str,
            user: str | None = None) -> list[dict[str, Any]]:
    return [e for e in site.audit(event_type)
            if reason in str(e.get("reason", "")) and e.get("user") == user
            and e.get("via") == "tls"]


def _still_serves(site: LimenCluster, olga: LimenUser, tmp_path: Path) -> None:
    answer = exchange(site, user_credentials(olga, tmp_path), request(LOGIN, HOST),
                      until=b"\r\n")
    assert answer.line == "OK"
    assert answer.rest.startswith(b"SSH-2.0-")


def test_no_client_certificate(site: LimenCluster, olga: LimenUser, tmp_path: Path) -> None:
    answer = exchange(site, None, request(LOGIN, HOST))
    assert answer.line.startswith("ERR no client certificate"), answer
    assert answer.rest == b""
    assert wait_for(lambda: _events(site, "auth", "no client certificate"), 10.0,
                    "the refused connection audited")[0]["success"] is False
    _still_serves(site, olga, tmp_path)


def test_a_process_certificate_instead_of_a_users(site: LimenCluster, olga: LimenUser,
                                                  tmp_path: Path) -> None:
    admin = site.data_dir / "admin"
    answer = exchange(site, (admin / "tls.crt", admin / "key.pem"), request(LOGIN, HOST))
    assert answer.line == "ERR a host or system certificate cannot log in as a user", answer
    assert wait_for(lambda: _events(site, "auth", "host or system certificate"), 10.0,
                    "the refused certificate audited")
    _still_serves(site, olga, tmp_path)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"GET / HTTP/1.1\r\n\r\n", "malformed request: one JSON object per line expected"),
    (b'{"login": "x", "host": "y"}\n', "malformed request: port must be an integer"),
    (b"{" + b" " * 9000, "request over 8192 bytes"),
], ids=["http", "no-port", "oversized"])
def test_malformed_and_oversized_requests(site: LimenCluster, olga: LimenUser, tmp_path: Path,
                                          payload: bytes, reason: str) -> None:
    answer = exchange(site, user_credentials(olga, tmp_path), payload)
    assert answer.line.startswith(f"ERR {reason}"), answer
    assert answer.rest == b""
    assert wait_for(lambda: _events(site, "route.failed", reason, "olga"), 10.0,
                    "the malformed request audited")
    _still_serves(site, olga, tmp_path)


def test_a_login_the_roles_refuse(site: LimenCluster, olga: LimenUser, tmp_path: Path) -> None:
    answer = exchange(site, user_credentials(olga, tmp_path), request("nobody-else", HOST))
    assert answer.line.startswith("ERR login 'nobody-else' is not allowed on"), answer
    events = wait_for(lambda: _events(site, "access.denied", "login 'nobody-else'", "olga"),
                      10.0, "the refused login audited")
    assert events[-1]["login"] == "nobody-else"
    _still_serves(site, olga, tmp_path)


def test_another_users_ssh_certificate(site: LimenCluster, olga: LimenUser, tess: LimenUser,
                                       tmp_path: Path) -> None:
    theirs = tess.ssh_cert_path(NAME).read_text(encoding="utf-8").strip()
    answer = exchange(site, user_credentials(olga, tmp_path),
                      request(LOGIN, HOST, cluster="leafy", ssh_cert=theirs))
    assert answer.line == ("ERR ssh_cert refused: the SSH certificate is not the TLS "
                           "certificate's user's"), answer
    assert wait_for(lambda: _events(site, "access.denied", "ssh_cert refused", "olga"), 10.0,
                    "the refused SSH certificate audited")


def test_a_certificate_of_another_cluster(site: LimenCluster, olga: LimenUser,
                                          module_clusters: ClusterFactory,
                                          tmp_path: Path) -> None:
    other = module_clusters("tlsother")
    stranger = other.signed_up_user("olga", roles=["access"], logins=[LOGIN])
    stranger.login()
    try:  # TLS 1.3: the server's alert may arrive after the client's handshake finished
        answer = exchange(site, user_credentials(stranger, tmp_path), request(LOGIN, HOST))
    except (ssl.SSLError, ConnectionResetError):
        pass
    else:
        assert (answer.line, answer.rest) == ("", b""), answer
    _still_serves(site, olga, tmp_path)
