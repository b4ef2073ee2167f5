"""The web UI in Debian's Chromium, end to end on a real cluster: sign-up from the invite
link (a wrong code refused and audited, then the QR code's secret enrolled), a wrong password
and a wrong code at login shown and audited, the login's ``redirect`` never leaving the proxy,
the resources page listing exactly the servers the roles allow (labels, search), the web
terminal running a command on the node (recorded and audited like lmsh ssh), the recording
listed and replayed in the player, the session found in the audit view, and logout removing
the cookie (API calls then 401, open terminals closed). A screenshot of every page is kept in
the test's tmp directory."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from integration.cluster import LimenUser, wait_for

from .conftest import HOST, LOGIN, WebSite, shot

DEADLINE = 30.0
MS = 20_000


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(browser: Browser, web_site: WebSite) -> Iterator[Page]:
    context = browser.new_context(base_url=web_site.origin)
    try:
        yield context.new_page()
    finally:
        context.close()


def _wrong_code_of(secret: str) -> str:
    totp, now = pyotp.TOTP(secret), int(time.time())
    near = {totp.at(now + 30 * k) for k in range(-3, 4)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in near)


def _wrong_code(user: LimenUser) -> str:
    assert user.totp_secret
    return _wrong_code_of(user.totp_secret)


def test_signup_from_the_invite_link_enrols_the_authenticator(
        page: Page, web_site: WebSite, invited: tuple[LimenUser, str], shots: Path) -> None:
    user, link = invited
    page.goto(urlsplit(link)._replace(scheme="", netloc="").geturl())  # path and ca_pin
    expect(page.locator("#signup-user")).to_have_text("webdev", timeout=MS)
    expect(page.locator("#qr")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    secret = page.locator("#totp-secret").inner_text().strip()
    shot(page, shots, "signup")
    page.fill("#password", user.password)
    page.fill("#password2", user.password)
    page.fill("#otp", _wrong_code_of(secret))
    page.click("#signup")
    expect(page.locator("#error")).to_be_visible(timeout=MS)
    wait_for(lambda: [e for e in web_site.cluster.audit("user.signup")
                      if e["code"] == "L1004W"], DEADLINE, "the refused sign-up audited")
    step = int(time.time()) // 30
    page.fill("#otp", pyotp.TOTP(secret).at(step * 30))
    page.click("#signup")
    expect(page.locator("#signed-up")).to_contain_text("Welcome, webdev", timeout=MS)
    shot(page, shots, "signed-up")
    user.signed_up(link, secret, step)


@pytest.fixture(scope="module")
def webdev(invited: tuple[LimenUser, str]) -> LimenUser:
    user, _link = invited
    assert user.totp_secret, "webdev signs up in the browser first"
    return user


def _failed_logins(site: WebSite, user: str) -> list[dict[str, Any]]:
    return [e for e in site.cluster.audit("user.login", user=user) if e["code"] == "L1000W"]


def _fill_login(page: Page, user: str, password: str, otp: str) -> None:
    page.fill("#user", user)
    page.fill("#password", password)
    page.fill("#otp", otp)
    page.click("#login")


def test_login_errors_are_shown_and_audited_and_redirect_stays_home(
        page: Page, web_site: WebSite, webdev: LimenUser, shots: Path) -> None:
    page.goto("/web/audit")
    expect(page).to_have_url(re.compile(r"/web/login\?redirect=%2Fweb%2Faudit"))
    page.goto("/web/login?redirect=https%3A%2F%2Fevil.example%2Fsteal")
    before = len(_failed_logins(web_site, "webdev"))
    _fill_login(page, "webdev", "not-the-password", webdev.next_code()[1])
    expect(page.locator("#error")).to_be_visible(timeout=MS)
    assert "password" in page.locator("#error").inner_text().lower()
    shot(page, shots, "login-wrong-password")
    _fill_login(page, "webdev", webdev.password, _wrong_code(webdev))
    expect(page.locator("#error")).to_contain_text("code", timeout=MS)
    shot(page, shots, "login-wrong-code")
    failed = wait_for(lambda: (f := _failed_logins(web_site, "webdev"))[before:] and
                      len(f) >= before + 2 and f, DEADLINE, "two failed logins in the audit log")
    assert len(failed) >= before + 2
    _fill_login(page, "webdev", webdev.password, webdev.take_code())
    # the redirect named another host: the page goes to its own start page instead
    expect(page).to_have_url(f"{web_site.origin}/web/", timeout=MS)
    expect(page.locator("#who")).to_contain_text("webdev")


def _resource_names(page: Page) -> set[str]:
    page.goto("/web/")
    expect(page.locator("body[data-page='/web/']")).to_be_attached(timeout=MS)
    return set(page.locator("tr.resource[data-kind=node]").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"))


def test_resources_list_exactly_what_the_roles_allow(page: Page, shots: Path) -> None:
    def with_node() -> set[str] | None:
        names = _resource_names(page)
        return names if HOST in names else None

    names = wait_for(with_node, DEADLINE, f"the node {HOST} on the resources page")
    assert names == {HOST, "dev-box"}  # build-box (env=staging) is not the role's
    expect(page.locator("tr[data-name=dev-box]")).to_contain_text("team=web")
    shot(page, shots, "resources")
    page.fill("#search", "team=web")
    expect(page.locator("tr.resource")).to_have_count(1)
    expect(page.locator("tr.resource")).to_have_attribute("data-name", "dev-box")


@pytest.fixture(scope="module")
def marker(page: Page, web_site: WebSite, shots: Path) -> str:
    """Runs ``echo web-$RANDOM`` in the web terminal; the number the shell printed."""
    page.goto("/web/")
    page.fill("#search", HOST)
    row = page.locator(f"tr[data-name='{HOST}']")
    row.locator("select.login").select_option(LOGIN)
    row.locator("button.connect").click()
    expect(page.locator("#term-status")).to_have_attribute("data-state", "connected",
                                                           timeout=MS)
    page.locator(".xterm-helper-textarea").focus()
    page.keyboard.type("echo web-$RANDOM\n")
    output = page.locator(".xterm-rows > div").filter(has_text=re.compile(r"^\s*web-\d+\s*$"))
    expect(output).to_have_count(1, timeout=MS)  # the echo's output line, not its command
    shot(page, shots, "terminal")
    found = re.findall(r"web-(\d+)", output.inner_text())
    assert found, output.inner_text()
    page.locator(".xterm-helper-textarea").focus()
    page.keyboard.type("exit\n")
    expect(page.locator("#term-status")).to_have_attribute("data-state", "ended", timeout=MS)
    return f"web-{found[-1]}"


def test_terminal_session_is_recorded_and_audited_like_ssh(
        marker: str, web_site: WebSite) -> None:
    ended = wait_for(lambda: [e for e in web_site.cluster.audit("session.end", user="webdev")
                              if e.get("recorded")], DEADLINE, "webdev's session.end")
    started = web_site.cluster.audit("session.start", user="webdev")
    assert any(e["session_id"] == ended[-1]["session_id"] and e.get("login") == LOGIN
               for e in started)


def _session_id(site: WebSite) -> str:
    ended = wait_for(lambda: [e for e in site.cluster.audit("session.end", user="webdev")
                              if e.get("recorded")], DEADLINE, "webdev's session.end")
    return str(ended[-1]["session_id"])


def test_recording_is_listed_and_plays(page: Page, web_site: WebSite, marker: str,
                                       shots: Path) -> None:
    session_id = _session_id(web_site)

    def listed() -> bool:
        page.goto("/web/recordings")
        expect(page.locator("body[data-page='/web/recordings']")).to_be_attached(timeout=MS)
        return page.locator(f"a.play[data-session='{session_id}']").count() == 1

    wait_for(listed, DEADLINE, f"recording {session_id} in the list")
    shot(page, shots, "recordings")
    page.click(f"a.play[data-session='{session_id}']")
    expect(page).to_have_url(f"{web_site.origin}/web/recordings/{session_id}")
    expect(page.locator("#player")).to_contain_text(marker, timeout=MS)
    page.select_option("#speed", "4")
    expect(page.locator("#player")).to_contain_text(marker, timeout=MS)
    shot(page, shots, "player")


def test_audit_view_finds_the_session(page: Page, web_site: WebSite, marker: str,
                                      shots: Path) -> None:
    session_id = _session_id(web_site)
    page.goto("/web/audit?type=session.start&user=webdev&since=1h")
    rows = page.locator("tr.audit-event[data-event='session.start']")
    expect(rows.filter(has_text=session_id)).to_have_count(1, timeout=MS)
    shot(page, shots, "audit")


def test_logout_removes_the_cookie_and_api_calls_are_refused(
        page: Page, web_site: WebSite, marker: str, shots: Path) -> None:
    other_tab = page.context.new_page()  # a terminal left open in another tab
    other_tab.goto(f"/web/terminal?node={HOST}&name={HOST}&login={LOGIN}")
    status = other_tab.locator("#term-status")
    expect(status).to_have_attribute("data-state", "connected", timeout=MS)
    page.goto("/web/")
    expect(page.locator("#logout")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-limen_session")
    assert cookie["httpOnly"]
    assert cookie["secure"]
    assert cookie["sameSite"] == "Strict"
    page.click("#logout")
    expect(page).to_have_url(f"{web_site.origin}/web/login", timeout=MS)
    shot(page, shots, "logged-out")
    assert [c for c in page.context.cookies() if c["name"] == "__Host-limen_session"] == []
    expect(status).to_contain_text("logged out", timeout=MS)  # its terminal closed
    other_tab.close()
    assert page.evaluate("async () => (await fetch('/v1/webapi/user/nodes')).status") == 401
    status, _headers, _body = web_site.request(
        "GET", "/v1/webapi/user/nodes",
        headers={"Cookie": f"__Host-limen_session={cookie['value']}"})
    assert status == 401  # the old cookie is worth nothing either
    wait_for(lambda: web_site.cluster.audit("user.logout", user="webdev"), DEADLINE,
             "the logout in the audit log")
