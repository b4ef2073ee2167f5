"""The web UI with a security key: sign up with one instead of the authenticator app, log in
with it, add a second key and remove keys on the Security keys page, in Debian's Chromium with
Chromium's virtual authenticator (DevTools ``WebAuthn.addVirtualAuthenticator``: CTAP2, USB,
user verification). The proxy's public address is ``localhost:PORT`` (a browser refuses an IP
address as the WebAuthn relying party), so the browser talks to the proxy by that name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, CDPSession, Page, Playwright, Route, expect

from integration.cluster import LimenCluster
from ports import free_port
from web.conftest import CHROMIUM, CHROMIUM_ARGS, _trusted_ca, spki_b64

MS = 20_000
PASSWORD = "keyweb-correct-horse-battery"


class Site:
    def __init__(self, cluster: LimenCluster, origin: str, spki: str) -> None:
        self.cluster, self.origin, self.spki = cluster, origin, spki


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("webauthn-web")
    port = free_port()
    config = root / "limen.yaml"
    others = ("ssh_proxy", "tunnel", "auth", "node_ssh", "postgres", "mysql", "kube")
    config.write_text(
        f"cluster: {{public_address: 'localhost:{port}'}}\n"
        f"listeners: {{web: '127.0.0.1:{port}', "
        + ", ".join(f"{name}: '127.0.0.1:0'" for name in others) + "}\n", encoding="utf-8")
    cluster = LimenCluster(root / "cluster", "keys", ["-c", str(config)], random_ports=False)
    cluster.start()
    try:
        link = cluster.add_user("probe", ["auditor"])["url"]
        yield Site(cluster, f"https://localhost:{port}", spki_b64(_trusted_ca(cluster, link)))
        cluster.stop()
    finally:
        cluster.kill()


@pytest.fixture(scope="module")
def browser(playwright: Playwright, site: Site) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={site.spki}"])
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(base_url=site.origin)
    try:
        yield context.new_page()
    finally:
        context.close()


def add_authenticator(page: Page) -> tuple[CDPSession, str]:
    """A virtual CTAP2 USB key with user verification, for this page's browser context."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True}})
    return cdp, str(added["authenticatorId"])


def presence(cdp: CDPSession, authenticator: str, touched: bool) -> None:
    cdp.send("WebAuthn.setAutomaticPresenceSimulation",
             {"authenticatorId": authenticator, "enabled": touched})


def events(site: Site, event_type: str, user: str, **fields: Any) -> list[Any]:
    return [e for e in site.cluster.audit(event_type, user=user)
            if all(e.get(k) == v for k, v in fields.items())]


def signup_with_key(page: Page, site: Site, name: str) -> None:
    link = site.cluster.add_user(name, ["auditor"])["url"]
    assert urlsplit(link).netloc == urlsplit(site.origin).netloc, link
    page.goto(urlsplit(link)._replace(scheme="", netloc="").geturl())
    expect(page.locator("#signup-user")).to_have_text(name, timeout=MS)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.check("#use-key")
    page.fill("#key-name", "first")
    page.click("#signup")
    expect(page.locator("#signed-up")).to_contain_text(f"Welcome, {name}", timeout=MS)


def login_with_key(page: Page, name: str) -> None:
    page.goto("/web/login")
    page.fill("#user", name)
    page.fill("#password", PASSWORD)
    page.click("#login-key")
    expect(page.locator("#who")).to_contain_text(name, timeout=MS)


def test_signup_login_and_keys_page(page: Page, site: Site, tmp_path: Path) -> None:
    cdp, first = add_authenticator(page)
    signup_with_key(page, site, "keyweb")
    assert events(site, "user.signup", "keyweb", second_factor="webauthn")
    login_with_key(page, "keyweb")
    assert events(site, "user.login", "keyweb", success=True, second_factor="webauthn")

    page.goto("/web/mfa")
    expect(page.locator("tr[data-factor=first]")).to_be_visible(timeout=MS)
    # A second key plugged in: the person touches the first to confirm, then the second to
    # register it (each virtual key "is touched" only while its presence is simulated).
    _cdp, second = add_authenticator(page)
    presence(cdp, second, False)

    def touch_the_new_key(route: Route) -> None:
        presence(cdp, first, False)
        presence(cdp, second, True)
        route.continue_()

    page.route("**/v1/webapi/user/mfa/register/begin", touch_the_new_key)
    page.fill("#key-name", "second")
    page.click("#add-key")
    expect(page.locator("tr[data-factor=second]")).to_be_visible(timeout=MS)
    assert events(site, "mfa.add", "keyweb", name="second", success=True)

    page.unroute("**/v1/webapi/user/mfa/register/begin")
    presence(cdp, first, True)  # the first key confirms its own removal
    presence(cdp, second, False)
    page.click("tr[data-factor=first] button.remove")
    expect(page.locator("tr[data-factor=first]")).to_have_count(0, timeout=MS)
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": first})
    presence(cdp, second, True)
    page.click("tr[data-factor=second] button.remove")
    expect(page.locator("#error")).to_contain_text("last second factor", timeout=MS)
    assert events(site, "mfa.remove", "keyweb", name="second", success=False)

    page.click("#logout")
    login_with_key(page, "keyweb")  # with the second key
    page.screenshot(path=str(tmp_path / "logged-in-with-key.png"))


def test_a_wrong_password_with_a_key_is_refused(page: Page, site: Site) -> None:
    add_authenticator(page)
    signup_with_key(page, site, "keywrong")
    page.goto("/web/login")
    page.fill("#user", "keywrong")
    page.fill("#password", "not-the-password-at-all")
    page.click("#login-key")
    expect(page.locator("#error")).to_contain_text("invalid password or security key",
                                                   timeout=MS)
    assert events(site, "user.login", "keywrong", success=False, reason="bad_password")
