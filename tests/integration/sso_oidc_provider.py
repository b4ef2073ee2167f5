"""The real OpenID provider of the SSO tests, and a headless browser for its login pages.

:func:`running_provider` starts ``node tests/oidc/provider.mjs PORT`` (the npm package
``oidc-provider``, installed by ``npm ci`` from the committed lock file: scripts/test does it,
and so does this module when ``node_modules`` is missing) on a free loopback port and waits for
its discovery document. :func:`follow_to_loopback` is the person at the browser: it opens the
authorization URL, signs in at the provider's (development) login form as ``login``, confirms
the consent form, and follows the redirects until the one to the loopback listener, whose URL
it returns without opening it. Clients and users are described in ``tests/oidc/provider.mjs``.
Used by ``test_sso_oidc.py`` (lmsh end to end) and ``test_sso_oidc_tokens.py`` (auth in
process, the token attacks).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from ports import free_port

from .cluster import wait_for

__all__ = ["CLIENT_SECRETS", "follow_to_loopback", "running_provider"]

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_SECRETS = {"limen": "limen-test-secret-0123456789abcdef",
                  "other": "other-test-secret-0123456789abcdef",
                  "limen-web": "limen-web-test-secret-0123456789abcdef"}
"""The provider's test clients and their secrets (tests/oidc/provider.mjs)."""
_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


def _discovery(issuer: str) -> bool:
    try:
        with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration",  # noqa: S310
                                    timeout=2) as answer:
            return bool(json.loads(answer.read()).get("issuer") == issuer)
    except OSError:
        return False


def _npm_ci() -> None:
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is needed for the SSO tests (scripts/test installs it)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=PROVIDER_DIR, check=True, timeout=300)


@contextlib.contextmanager
def running_provider(log_dir: Path, web_redirect: str = "") -> Iterator[str]:
    """The issuer URL of a provider running for the block; ``web_redirect`` adds the client
    ``limen-web`` that redirects there (a proxy's web UI callback)."""
    _npm_ci()
    node = shutil.which("node")
    assert node, "node is needed for the SSO tests (scripts/test installs it)"
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with (log_dir / "oidc-provider.log").open("wb") as log:
        process = subprocess.Popen([node, "provider.mjs", str(port),
                                    *([web_redirect] if web_redirect else [])], cwd=PROVIDER_DIR,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        def up() -> bool:
            assert process.poll() is None, (log_dir / "oidc-provider.log").read_text()
            return _discovery(issuer)

        wait_for(up, 20, f"the OpenID provider's discovery document at {issuer}")
        yield issuer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def follow_to_loopback(auth_url: str, login: str) -> str:
    """Sign in as ``login`` at the provider and consent; the URL of the redirect to the
    loopback listener (``http://127.0.0.1:PORT/...?code=...&state=...``)."""
    issuer = urlsplit(auth_url)
    jar = aiohttp.CookieJar(unsafe=True)  # the provider is on an IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        url, method, form = auth_url, "GET", None
        for _ in range(12):
            async with session.request(method, url, data=form, allow_redirects=False) as resp:
                body = await resp.text()
                location = resp.headers.get("Location")
                status = resp.status
            if location is not None:
                url, method, form = urljoin(url, location), "GET", None
                if urlsplit(url).netloc != issuer.netloc:
                    return url
                continue
            assert status == 200, f"the provider answered {status}: {body[:500]}"
            match = _ACTION.search(body)
            assert match, f"no form in the provider's page: {body[:500]}"
            url, method = urljoin(url, match.group(1)), "POST"
            form = {"prompt": "login", "login": login, "password": "any"} \
                if 'name="login"' in body else {"prompt": "consent"}
        raise AssertionError("the provider never redirected back to the loopback listener")
