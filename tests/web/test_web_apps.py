"""An app through the proxy in Chromium: a browser without any Limen cookie opening
``https://hello.apps.test`` is sent to the web UI's login page, logs in there, and lands on the
app's page (the login page's redirect names the app, the web UI asks the proxy for an app
session and follows its hand-over URL on the app's host); the app answers for the verified
user of its JWT. The cluster, the app agent apart from auth and the upstream app are the
application-access tests' own (``integration.test_apps_e2e.env``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, expect

from integration.test_apps_e2e import APP_HOST, Env, env  # noqa: F401  (the module fixture)

from .conftest import CHROMIUM, CHROMIUM_ARGS, shot, spki_b64

MS = 20_000


@pytest.fixture(scope="module")
def app_browser(playwright: Playwright, env: Env) -> Iterator[Browser]:  # noqa: F811
    ca = Path(env.upstream.cafile).read_bytes()  # the cluster's CA, as lmsh apps config names it
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_b64(ca)}",
              f"--host-resolver-rules=MAP {APP_HOST} 127.0.0.1"])
    try:
        yield launched
    finally:
        launched.close()


def test_a_browser_logs_in_on_the_proxy_and_lands_on_the_app(
        app_browser: Browser, env: Env, tmp_path: Path) -> None:  # noqa: F811
    alice = env.alice
    context = app_browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"https://{APP_HOST}:{env.web_port}/after?x=1")
        expect(page).to_have_url(re.compile(
            rf"^https://127\.0\.0\.1:{env.web_port}/web/login\?redirect="), timeout=MS)
        page.fill("#user", "alice")
        page.fill("#password", alice.password)
        page.fill("#otp", alice.take_code())
        page.click("#login")
        expect(page).to_have_url(f"https://{APP_HOST}:{env.web_port}/after?x=1", timeout=MS)
        answer = json.loads(page.locator("body").inner_text())
        assert answer["hello"] == "alice"  # the app verified alice's JWT
        shot(page, tmp_path, "app")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["limen_app_session"]["domain"] == APP_HOST  # that host only
        assert cookies["__Host-limen_session"]["domain"] == "127.0.0.1"
    finally:
        context.close()
