"""Credentials for the Git sync's remote, and keeping them out of every log line and URL.

Where credentials come from, first found wins:

1. ``gitops.credentials_file`` (``limen.yaml``): one line ``username:password``, or one line
   holding only a token (sent with the user name ``x-access-token``, which GitHub, GitLab and
   Gitea accept for tokens), or an SSH private key (for ``ssh://`` and ``git@host:path``).
2. The environment: ``LIMEN_GITOPS_USERNAME`` and ``LIMEN_GITOPS_PASSWORD``.
3. A user name and password written into an HTTPS URL (``https://user:pass@host/repo``):
   they are taken out of the URL before Git sees it.

How they reach Git: never on a command line or in a URL. For HTTP(S), :func:`git_environment`
points ``GIT_ASKPASS`` at a small script (DATA_DIR/gitops/askpass, 0700, holding no secret)
that prints the user name and password from two environment variables of the ``git``
subprocess only, and empties ``credential.helper`` so no helper stores them on disk. For SSH, a
key file is passed with ``GIT_SSH_COMMAND ssh -i FILE``. ``GIT_TERMINAL_PROMPT=0`` and SSH's
``BatchMode`` make a missing credential a quick error instead of a hung prompt.

Called by ``limen.gitops.repository``; :func:`redact_url` and :func:`scrub_secrets` are used by
everything that logs or stores a source or an error message.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from limen.errors import BadParameter

__all__ = [
    "ASKPASS_SCRIPT",
    "TOKEN_USERNAME",
    "Credentials",
    "git_environment",
    "load_credentials",
    "redact_url",
    "scrub_secrets",
    "split_url_credentials",
]

TOKEN_USERNAME = "x-access-token"
"""User name sent with a credentials file that holds only a token."""
REDACTED = "***"
ASKPASS_SCRIPT = """#!/bin/sh
# Written by limen: answers Git's username/password prompts from the environment of the git
# process that limen's GitOps sync runs. Holds no secret itself.
case "$1" in
  [Uu]sername*) printf '%s\\n' "$LIMEN_GITOPS_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$LIMEN_GITOPS_ASKPASS_PASSWORD" ;;
esac
"""
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@")


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for HTTP(S), or an SSH private key file."""

    username: str = ""
    password: str = field(default="", repr=False)
    ssh_key_file: str = ""

    def __repr__(self) -> str:
        secret = REDACTED if self.password else ""
        return (f"Credentials(username={self.username!r}, password={secret!r}, "
                f"ssh_key_file={self.ssh_key_file!r})")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line, a status or an event."""
        return tuple(s for s in (self.password, quote(self.password, safe="")) if s)


def split_url_credentials(url: str) -> tuple[str, Credentials | None]:
    """``https://u:p@host/x`` → (``https://host/x``, Credentials(u, p)); other URLs unchanged."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc or parts.scheme not in ("http", "https"):
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, Credentials(unquote(username), unquote(password))


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (user names stay: they help debugging)."""

    def hide(match: re.Match[str]) -> str:
        user, sep, _password = match.group("userinfo").partition(":")
        return f"{match.group('scheme')}{user}{':' + REDACTED if sep else ''}@"

    return _USERINFO.sub(hide, url)


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value and every URL password replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return redact_url(text)


def load_credentials(credentials_file: str, env: Mapping[str, str],
                     url_credentials: Credentials | None = None) -> Credentials | None:
    """The credentials to use, by the precedence in the module docstring (None: anonymous)."""
    if credentials_file:
        return _from_file(Path(credentials_file))
    username = env.get("LIMEN_GITOPS_USERNAME", "")
    password = env.get("LIMEN_GITOPS_PASSWORD", "")
    if password:
        return Credentials(username or TOKEN_USERNAME, password)
    if username:
        raise BadParameter("LIMEN_GITOPS_USERNAME is set but LIMEN_GITOPS_PASSWORD is not")
    return url_credentials


def _from_file(path: Path) -> Credentials:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise BadParameter(f"cannot read the GitOps credentials file {path}: {reason}") from None
    if "PRIVATE KEY-----" in text:
        return Credentials(ssh_key_file=str(path.resolve()))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise BadParameter(f"the GitOps credentials file {path} must hold one line: "
                           "username:password, or a token")
    username, sep, password = lines[0].partition(":")
    if not sep:
        return Credentials(TOKEN_USERNAME, lines[0])
    if not username or not password:
        raise BadParameter(f"the GitOps credentials file {path} must hold username:password")
    return Credentials(username, password)


def git_environment(credentials: Credentials | None, askpass_dir: Path,
                    env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for one ``git`` subprocess that talks to the remote."""
    base = os.environ if env is None else env
    out = {"GIT_TERMINAL_PROMPT": "0"}
    if "GIT_SSH_COMMAND" not in base and "GIT_SSH" not in base:
        out["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    if credentials is None:
        return out
    if credentials.ssh_key_file:
        out["GIT_SSH_COMMAND"] = (f"ssh -o BatchMode=yes -o IdentitiesOnly=yes "
                                  f"-i {shlex.quote(credentials.ssh_key_file)}")
        return out
    script = _askpass_script(askpass_dir)
    out.update({
        "GIT_ASKPASS": str(script),
        "LIMEN_GITOPS_ASKPASS_USERNAME": credentials.username,
        "LIMEN_GITOPS_ASKPASS_PASSWORD": credentials.password,
        # No credential helper: none may store these credentials (e.g. in ~/.git-credentials).
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
    })
    return out


def _askpass_script(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "askpass"
    if not path.exists() or path.read_text(encoding="utf-8") != ASKPASS_SCRIPT:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(ASKPASS_SCRIPT, encoding="utf-8")
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    return path
