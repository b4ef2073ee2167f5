"""Fixtures of the web UI tests: one ``limen start`` cluster per test module (a node labelled
env=dev, an agentless env=dev server and an env=staging one; a role ``webdev`` that may reach
env=dev only, with the ``auditor`` preset for the audit log), its users, an HTTPS client that
trusts the cluster's CA (checked against the CA pin of the sign-up link, as lmsh does) and
Debian's Chromium driven by Playwright, trusting the same CA key
(``--ignore-certificate-errors-spki-list`` with the CA's SPKI hash: only certificates chained
to that key are accepted, nothing else is ignored).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Playwright, sync_playwright

from integration.cluster import LimenCluster, LimenUser

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SETUP = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: webdev}
spec:
  allow:
    logins: ['{{internal.logins}}']
    node_labels: {env: dev}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: dev-box, labels: {env: dev, team: web}}
spec: {kind: ssh, address: '127.0.0.1:1', hostname: dev-box}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: build-box, labels: {env: staging}}
spec: {kind: ssh, address: '127.0.0.1:2', hostname: build-box}
"""


@dataclass
class WebSite:
    cluster: LimenCluster
    ca_pem: bytes
    ca_spki_b64: str

    @property
    def origin(self) -> str:
        return f"https://{self.cluster.web}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request to the proxy's web port (CA trusted): status, headers, body."""
        host, port = self.cluster.web.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=self.context(), timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def cookies_of(self, headers: dict[str, str]) -> str:
        return headers.get("set-cookie", "")


def _trusted_ca(site: LimenCluster, link: str) -> bytes:
    """The CA the proxy presents, checked against the pin of the sign-up ``link``."""
    host, port = site.web.rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=20)
    try:
        conn.request("GET", "/v1/webapi/ping")
        ping = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    ca = x509.load_pem_x509_certificate(ping["tls_ca"].encode())
    spki = ca.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = link.split("ca_pin=sha256:")[1].split("&")[0]
    assert hashlib.sha256(spki).hexdigest() == pin.lower(), "the proxy's CA does not match the pin"
    return str(ping["tls_ca"]).encode()


def spki_b64(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def web_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSite]:
    root = tmp_path_factory.mktemp("web")
    cluster = LimenCluster(root / "cluster", "web", ["--labels", "env=dev"]).start()
    try:
        setup = root / "setup.yaml"
        setup.write_text(SETUP, encoding="utf-8")
        cluster.lmctl("apply", "-f", setup)
        link = cluster.add_user("probe", ["auditor"])["url"]
        ca = _trusted_ca(cluster, link)
        yield WebSite(cluster, ca, spki_b64(ca))
        cluster.stop()
    finally:
        cluster.kill()


@pytest.fixture(scope="module")
def invited(web_site: WebSite) -> tuple[LimenUser, str]:
    """``webdev`` invited (not signed up yet) and the sign-up link lmctl printed: may reach
    env=dev servers as the test's Unix login and reads the audit log (auditor)."""
    link = web_site.cluster.add_user("webdev", ["webdev", "auditor"], [LOGIN])["url"]
    return web_site.cluster.user("webdev"), link


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, web_site: WebSite) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={web_site.ca_spki_b64}"])
    try:
        yield launched
    finally:
        launched.close()


def shot(page: Any, directory: Path, name: str) -> None:
    """A screenshot of ``page`` kept with the test's artefacts."""
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)
