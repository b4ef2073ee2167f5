"""Unix logins of the node agent: account lookup, who the agent may run sessions as, and the
login environment of a session.

Called by the session code (:mod:`limen.agents.node.session`) before it spawns a shell, a
command or the SFTP server. An agent running as root starts sessions as any existing account
(real setuid/setgid and supplementary groups, done by :mod:`limen.agents.node.session_process`); an
agent running as an ordinary user can only start sessions as itself, and says so.

An account whose shell is ``nologin`` or ``false`` (or no executable file) gets no session at
all (:func:`login_shell_refusal`): sshd runs shells, commands and subsystems (sftp) through the
login shell, so such an account can do none of them there, and Limen does not bypass that.

The environment follows sshd: ``HOME USER LOGNAME SHELL PATH MAIL``, ``TERM`` from the PTY
request, ``LANG``/``LC_*``/``COLORTERM``/``NO_COLOR`` passed through from the client (sshd's
Debian ``AcceptEnv``), ``SSH_CLIENT``, ``SSH_CONNECTION``, ``SSH_TTY``, ``SSH_AUTH_SOCK`` and
Limen's own ``SSH_SESSION_ID``, ``SSH_LIMEN_USER``, ``SSH_LIMEN_CLUSTER_NAME``,
``SSH_LIMEN_HOST_ID`` (Teleport's ``SSH_TELEPORT_*`` in Limen's name).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from limen.errors import AccessDenied, NotFound

__all__ = [
    "DEFAULT_PATH",
    "ROOT_PATH",
    "SessionEnv",
    "UnixUser",
    "check_can_run_as",
    "is_accepted_env",
    "login_environment",
    "login_shell_refusal",
    "lookup_user",
]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_FALLBACK_SHELL = "/bin/sh"
_ACCEPTED = frozenset({"LANG", "COLORTERM", "NO_COLOR", "TZ"})
NOLOGIN_SHELLS = frozenset({"nologin", "false"})
"""Shell names (any directory) that mark an account as not for interactive use."""


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @property
    def groups(self) -> list[int]:
        """Supplementary groups (what ``initgroups`` would set)."""
        try:
            return os.getgrouplist(self.name, self.gid)
        except OSError:
            return [self.gid]

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def lookup_user(login: str) -> UnixUser:
    """The account for ``login``; :class:`NotFound` if the host has none."""
    try:
        entry = pwd.getpwnam(login)
    except (KeyError, ValueError):
        raise NotFound(f"there is no Unix user {login!r} on this host") from None
    shell = entry.pw_shell or _FALLBACK_SHELL
    return UnixUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/", shell)


def login_shell_refusal(user: UnixUser) -> str | None:
    """Why ``user`` may not have a session (shell, command, scp or sftp), or None: its shell
    is ``nologin``/``false`` or not an executable file (sshd refuses the same accounts)."""
    if os.path.basename(user.shell) in NOLOGIN_SHELLS:
        return (f"the login {user.name!r} has no login shell ({user.shell}): shells, commands "
                "and file transfers are refused")
    if not (os.path.isfile(user.shell) and os.access(user.shell, os.X_OK)):
        return (f"the shell of login {user.name!r} ({user.shell}) is not an executable file: "
                "shells, commands and file transfers are refused")
    return None


def check_can_run_as(user: UnixUser) -> None:
    """Raise :class:`AccessDenied` when this process cannot start sessions as ``user``."""
    euid = os.geteuid()
    if euid == 0 or euid == user.uid:
        return
    try:
        me = pwd.getpwuid(euid).pw_name
    except KeyError:
        me = str(euid)
    raise AccessDenied(f"this node agent runs as {me!r}, not root: it can only start sessions "
                       f"as {me!r}, not as {user.name!r}")


def is_accepted_env(name: str) -> bool:
    """Whether a client-sent variable is passed to the session (``LANG``, ``LC_*`` ...)."""
    return name in _ACCEPTED or (name.startswith("LC_") and name[3:].replace("_", "").isalnum())


@dataclass(frozen=True)
class SessionEnv:
    """What the session knows when it builds the environment."""

    session_id: str
    limen_user: str
    cluster: str
    host_id: str
    client_addr: tuple[str, int]
    server_addr: tuple[str, int]
    term: str | None = None
    tty: str | None = None
    auth_sock: str | None = None


def login_environment(user: UnixUser, info: SessionEnv,
                      client_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a login session for ``user`` (see the module docstring)."""
    env: dict[str, str] = {}
    for name, value in (client_env or {}).items():
        if is_accepted_env(name) and "\0" not in value:
            env[name] = value
    client_host, client_port = info.client_addr
    server_host, server_port = info.server_addr
    env.update({
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": user.shell,
        "PATH": ROOT_PATH if user.is_root else DEFAULT_PATH,
        "MAIL": f"/var/mail/{user.name}",
        "SSH_CLIENT": f"{client_host} {client_port} {server_port}",
        "SSH_CONNECTION": f"{client_host} {client_port} {server_host} {server_port}",
        "SSH_SESSION_ID": info.session_id,
        "SSH_LIMEN_USER": info.limen_user,
        "SSH_LIMEN_CLUSTER_NAME": info.cluster,
        "SSH_LIMEN_HOST_ID": info.host_id,
    })
    if info.term:
        env["TERM"] = info.term
    if info.tty:
        env["SSH_TTY"] = info.tty
    if info.auth_sock:
        env["SSH_AUTH_SOCK"] = info.auth_sock
    return env
