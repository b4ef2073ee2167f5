"""The web UI's single sign-on, in Debian's Chromium driven by Playwright: the login page offers
a button per connector the proxy lists, and a click leads through the provider back to the
proxy's web callback, which makes the web session as a password login does.

Providers: the real OpenID provider (the npm package ``oidc-provider``, ``tests/oidc``, with a
web client whose redirect is this proxy's callback) and the GitHub OAuth + REST emulator
(``tests/github_emulator``). Attacks, each refused with an error page (or a 403) and no session,
and audited by auth as ``user.login`` with its reason:

    a forged state at the web callback                           unknown_state
    a replayed web callback (state and code used already)        unknown_state
    a login's redirect completed in another browser (login CSRF)  wrong_browser
    the state of an lmsh login completed as a web session        wrong_client
    the state of a web login completed by lmsh's callback        wrong_client
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from playwright.sync_api import Browser, Page, expect

from github_emulator.emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    GitHubEmulator,
    Person,
    Team,
    follow_to_callback,
)
from integration.cluster import wait_for
from integration.sso_oidc_provider import CLIENT_SECRETS, running_provider
from limen.ca.keys import generate_private_key, public_key_to_openssh

from .conftest import LOGIN, WebSite, shot

MS = 20_000
T = TypeVar("T")
DOCUMENTS = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: sso-web}}
spec:
  allow:
    logins: [{login}]
    node_labels: {{env: dev}}
---
apiVersion: limen.dev/v1alpha1
kind: OIDCConnector
metadata: {{name: corp}}
spec:
  display: Corp SSO
  issuer_url: {issuer}
  client_id: limen-web
  client_secret_ref: {{file: corp-web.secret}}
  web_redirect_url: {origin}/v1/webapi/sso/oidc/web/callback
  claims_to_roles:
  - {{claim: groups, value: 'eng-*', roles: [sso-web]}}
---
apiVersion: limen.dev/v1alpha1
kind: GitHubConnector
metadata: {{name: github}}
spec:
  display: GitHub
  client_id: {client_id}
  client_secret_ref: {{file: github.secret}}
  endpoint_url: {endpoint}
  api_endpoint_url: {api}
  web_redirect_url: {origin}/v1/webapi/sso/github/web/callback
  teams_to_roles:
  - {{organization: acme, team: ops, roles: [sso-web]}}
"""


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sso-screenshots")


@pytest.fixture(scope="module")
def providers(web_site: WebSite, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[str, GitHubEmulator]]:
    origin = web_site.origin
    github = GitHubEmulator([Person("octo-cat", (Team("acme", "ops"),))], callbacks=(
        "http://127.0.0.1/callback", f"{origin}/v1/webapi/sso/github/web/callback"))
    with running_provider(tmp_path_factory.mktemp("oidc-web"),
                          f"{origin}/v1/webapi/sso/oidc/web/callback") as issuer, github:
        cluster = web_site.cluster
        secrets = cluster.data_dir / "secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        for name, value in (("corp-web.secret", CLIENT_SECRETS["limen-web"]),
                            ("github.secret", CLIENT_SECRET)):
            (secrets / name).write_text(value + "\n")
            (secrets / name).chmod(0o600)
        cluster.lmctl("apply", "-f", "-", input=DOCUMENTS.format(
            login=LOGIN, issuer=issuer, origin=origin, client_id=CLIENT_ID,
            endpoint=github.endpoint_url, api=github.api_endpoint_url))
        yield issuer, github


@pytest.fixture
def page(browser: Browser, web_site: WebSite, providers: Any) -> Iterator[Page]:
    context = browser.new_context(base_url=web_site.origin)
    try:
        yield context.new_page()
    finally:
        context.close()


def _in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end (Playwright's sync API holds this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(60)


def _failures(web_site: WebSite, method: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in web_site.cluster.audit("user.login")
            if e.get("method") == method and e.get("reason") == reason]


def _session_cookie(headers: dict[str, str]) -> bool:
    return "__Host-limen_session=" in headers.get("set-cookie", "")


def _callbacks(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/web/callback" in r.url else None)
    return seen


def test_the_login_page_offers_the_connectors(page: Page, web_site: WebSite,
                                              shots: Path) -> None:
    page.goto("/web/login")
    expect(page.locator("#sso-oidc-corp")).to_have_text("Corp SSO", timeout=MS)
    expect(page.locator("#sso-github-github")).to_have_text("GitHub")
    shot(page, shots, "login-with-sso")
    status, _headers, body = web_site.request("GET", "/v1/webapi/sso/connectors")
    assert status == 200
    assert b"secret" not in body
    assert b"limen-web" not in body  # not even the client id


def test_oidc_button_logs_in_through_the_provider(page: Page, web_site: WebSite,
                                                  shots: Path) -> None:
    page.goto("/web/login")
    page.locator("#sso-oidc-corp").click(timeout=MS)
    page.locator("input[name=login]").fill("alice", timeout=MS)  # the provider's login form
    page.locator("input[name=password]").fill("any")
    page.locator("button[type=submit]").click()
    page.locator("button[type=submit]").click(timeout=MS)  # the provider's consent form
    expect(page).to_have_url(f"{web_site.origin}/web/", timeout=MS)
    expect(page.locator("#who")).to_contain_text("alice@example.com", timeout=MS)
    expect(page.locator("tr[data-name=dev-box]")).to_be_visible(timeout=MS)
    shot(page, shots, "logged-in-with-oidc")
    event = wait_for(lambda: [e for e in web_site.cluster.audit(
        "user.login", user="alice@example.com") if e.get("success", True)], 10, "the login")[-1]
    assert (event["method"], event["connector"], event["roles"]) == ("oidc", "corp",
                                                                     ["sso-web"])


def test_github_button_logs_in_and_a_replay_is_refused(page: Page, web_site: WebSite,
                                                       shots: Path) -> None:
    callbacks = _callbacks(page)
    page.goto("/web/login")
    page.locator("#sso-github-github").click(timeout=MS)
    page.locator("#login_field").fill("octo-cat", timeout=MS)  # the emulator's login form
    page.locator("#password").fill("any")
    page.locator("input[type=submit]").click()
    expect(page).to_have_url(f"{web_site.origin}/web/", timeout=MS)
    expect(page.locator("#who")).to_contain_text("octo-cat", timeout=MS)
    expect(page.locator("tr[data-name=dev-box]")).to_be_visible(timeout=MS)
    shot(page, shots, "logged-in-with-github")
    [callback] = callbacks
    event = wait_for(lambda: [e for e in web_site.cluster.audit("user.login", user="octo-cat")
                              if e.get("success", True)], 10, "the login")[-1]
    assert (event["method"], event["connector"]) == ("github", "github")
    assert parse_qs(urlsplit(callback).query)["code"][0] not in str(event)

    page.goto(callback)  # the same browser, the same state and code again
    expect(page.locator("#sso-error")).to_contain_text("already used", timeout=MS)
    shot(page, shots, "replayed-callback")
    wait_for(lambda: _failures(web_site, "github", "unknown_state"), 10, "the replay's event")


def test_a_forged_state_gets_an_error_page_and_no_session(page: Page,
                                                          web_site: WebSite) -> None:
    response = page.goto("/v1/webapi/sso/oidc/web/callback?state=forged-state&code=abc")
    assert response is not None
    assert response.status == 403
    expect(page.locator("#sso-error")).to_contain_text("unknown, already used or expired")
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-limen_session"]
    wait_for(lambda: _failures(web_site, "oidc", "unknown_state"), 10, "the refusal's event")


async def _web_start(web_site: WebSite) -> tuple[str, str]:
    """A web login started as the login page starts it: its provider callback URL (signed in
    at the emulator) and the browser token cookie the proxy set."""
    status, headers, body = web_site.request(
        "POST", "/v1/webapi/sso/github/github/web", b"{}",
        {"Content-Type": "application/json"})
    assert status == 200, body
    token = re.search(r"__Host-limen_sso=([^;]+)", headers["set-cookie"])
    assert token
    async with aiohttp.ClientSession() as browser:
        callback = await follow_to_callback(browser, json.loads(body)["auth_url"], "octo-cat")
    assert callback.startswith(f"{web_site.origin}/v1/webapi/sso/github/web/callback?")
    return callback, token.group(1)


def test_a_callback_in_another_browser_makes_no_session(web_site: WebSite,
                                                        providers: Any) -> None:
    callback, _token = _in_thread(_web_start(web_site))
    path = callback.removeprefix(web_site.origin)
    status, headers, body = web_site.request("GET", path)  # no __Host-limen_sso cookie
    assert status == 403, body
    assert b"another browser" in body
    assert not _session_cookie(headers)
    wait_for(lambda: _failures(web_site, "github", "wrong_browser"), 10, "the refusal's event")


def test_a_web_login_cannot_be_finished_by_lmsh(web_site: WebSite, providers: Any) -> None:
    callback, _token = _in_thread(_web_start(web_site))
    query = parse_qs(urlsplit(callback).query)
    status, _headers, body = web_site.request(
        "POST", "/v1/webapi/sso/github/callback",
        json.dumps({"state": query["state"][0], "code": query["code"][0]}),
        {"Content-Type": "application/json"})
    assert status == 403, body
    assert b"started in the web UI, not by lmsh" in body
    wait_for(lambda: _failures(web_site, "github", "wrong_client"), 10, "the refusal's event")


def test_an_lmsh_login_cannot_become_a_web_session(web_site: WebSite,
                                                   providers: Any) -> None:

    public = public_key_to_openssh(generate_private_key().public_key())
    status, _headers, body = web_site.request(
        "POST", "/v1/webapi/sso/github/github/start",
        json.dumps({"public_key": public, "port": 40123}), {"Content-Type": "application/json"})
    assert status == 200, body

    async def sign_in() -> str:
        async with aiohttp.ClientSession() as browser:
            return await follow_to_callback(browser, json.loads(body)["auth_url"], "octo-cat")

    loopback = _in_thread(sign_in())
    assert loopback.startswith("http://127.0.0.1:40123/callback?")
    before = len(_failures(web_site, "github", "wrong_client"))
    status, headers, page = web_site.request(
        "GET", f"/v1/webapi/sso/github/web/callback?{urlsplit(loopback).query}")
    assert status == 403, page
    assert b"started by lmsh, not in the web UI" in page
    assert not _session_cookie(headers)
    wait_for(lambda: len(_failures(web_site, "github", "wrong_client")) > before, 10,
             "the refusal's event")
