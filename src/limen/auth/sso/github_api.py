"""Auth's HTTP client of GitHub's OAuth and REST endpoints (github.com or GitHub Enterprise).

``exchange`` posts an authorization code to ``ENDPOINT/login/oauth/access_token`` (JSON asked
for with ``Accept``) with the client secret and the PKCE verifier, and returns the access token;
GitHub answers a refused code with HTTP 200 and an ``error`` member, which is a refusal here.
``user`` reads ``API/user`` (login, name, email); ``teams`` reads ``API/user/teams`` page by
page, following the ``Link`` header's ``rel="next"`` only to the same API origin, at most
``MAX_PAGES`` pages. Answers are bounded in size, redirects are not followed, and every failure
is an :class:`~limen.auth.sso.errors.SSOFailure` saying which step failed, never with the
token, the code or the secret in it. The token is held only for the calls of one login.
Used by :class:`limen.auth.sso.github.GitHubLogins`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp

from limen.auth.sso.errors import SSOFailure

__all__ = ["MAX_PAGES", "GitHubClient", "GitHubTeam", "GitHubUser"]

_MAX_ANSWER = 512 << 10
_TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_PAGES = 20
"""At most this many pages of teams (100 a page) are read for one login."""
_API_VERSION = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubUser(NamedTuple):
    """What Limen uses of ``GET /user``."""

    login: str
    name: str
    email: str


class GitHubTeam(NamedTuple):
    """One team of ``GET /user/teams``: its organization's login and its slug."""

    organization: str
    slug: str


class GitHubClient:
    """One HTTP session for every GitHub auth talks to; close it with :meth:`close`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def exchange(self, endpoint_url: str, *, client_id: str, client_secret: str,
                       code: str, redirect_uri: str, code_verifier: str) -> str:
        """The access token GitHub gives for ``code``."""
        form = {"client_id": client_id, "client_secret": client_secret, "code": code,
                "redirect_uri": redirect_uri, "code_verifier": code_verifier}
        try:
            async with self._http().post(f"{endpoint_url}/login/oauth/access_token", data=form,
                                         headers={"Accept": "application/json"},
                                         allow_redirects=False) as answer:
                body = await answer.content.read(_MAX_ANSWER + 1)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SSOFailure("provider_unreachable", "cannot reach GitHub's token endpoint: "
                             f"{type(err).__name__}") from None
        doc = _json_object(body, "token endpoint answer", status) if status == 200 else {}
        error = doc.get("error")
        if status != 200 or error is not None:
            code_text = f": {error[:64]}" if isinstance(error, str) and error.isprintable() \
                else ""
            raise SSOFailure("token_exchange_failed",
                             f"GitHub refused the code (HTTP {status}{code_text})")
        token = doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise SSOFailure("token_exchange_failed", "GitHub's token answer has no access "
                             "token")
        return token

    async def _get(self, url: str, token: str, what: str) -> tuple[Any, str]:
        headers = {**_API_VERSION, "Authorization": f"Bearer {token}"}
        try:
            async with self._http().get(url, headers=headers, allow_redirects=False) as answer:
                body = await answer.content.read(_MAX_ANSWER + 1)
                status = answer.status
                link = answer.headers.get("Link", "")
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SSOFailure("provider_unreachable",
                             f"cannot read GitHub's {what}: {type(err).__name__}") from None
        if status != 200 or len(body) > _MAX_ANSWER:
            raise SSOFailure("provider_error", f"GitHub's {what} answered HTTP {status}")
        try:
            return json.loads(body), link
        except (ValueError, UnicodeDecodeError):
            raise SSOFailure("provider_error", f"GitHub's {what} is not JSON") from None

    async def user(self, api_url: str, token: str) -> GitHubUser:
        """The person the token belongs to (``GET /user``)."""
        doc, _link = await self._get(f"{api_url}/user", token, "user (/user)")
        if not isinstance(doc, dict) or not isinstance(doc.get("login"), str):
            raise SSOFailure("provider_error", "GitHub's /user answer names no login")
        return GitHubUser(doc["login"], _text(doc.get("name")), _text(doc.get("email")))

    async def teams(self, api_url: str, token: str) -> list[GitHubTeam]:
        """Every team the person is a member of (``GET /user/teams``, all pages)."""
        origin = urlsplit(api_url)[:2]
        url: str | None = f"{api_url}/user/teams?per_page=100"
        teams: list[GitHubTeam] = []
        for _page in range(MAX_PAGES):
            if url is None:
                return teams
            doc, link = await self._get(url, token, "teams (/user/teams)")
            if not isinstance(doc, list):
                raise SSOFailure("provider_error", "GitHub's /user/teams answer is not a list")
            teams.extend(t for t in map(_team, doc) if t is not None)
            url = next_link(link)
            if url is not None and urlsplit(url)[:2] != origin:
                raise SSOFailure("provider_error", "GitHub's next page of teams is on another "
                                 "server")
        if url is not None:
            raise SSOFailure("too_many_teams", f"you are in more than {MAX_PAGES * 100} "
                             "teams; Limen reads no more")
        return teams


def next_link(header: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (RFC 8288), None without one."""
    for part in header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        rels = [p.strip() for p in params.split(";")]
        if target.startswith("<") and target.endswith(">") and \
                any(r.replace(" ", "") in ('rel="next"', "rel=next") for r in rels):
            return target[1:-1]
    return None


def _team(item: object) -> GitHubTeam | None:
    if not isinstance(item, dict):
        return None
    org = item.get("organization")
    slug = item.get("slug")
    login = org.get("login") if isinstance(org, dict) else None
    if isinstance(login, str) and isinstance(slug, str) and login and slug:
        return GitHubTeam(login, slug)
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) and len(value) <= 1024 else ""


def _json_object(body: bytes, what: str, status: int) -> Mapping[str, Any]:
    if len(body) > _MAX_ANSWER:
        raise SSOFailure("provider_error", f"GitHub's {what} is too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SSOFailure("provider_error", f"GitHub's {what} is not JSON (HTTP {status})") \
            from None
    if not isinstance(doc, dict):
        raise SSOFailure("provider_error", f"GitHub's {what} is not a JSON object")
    return doc
