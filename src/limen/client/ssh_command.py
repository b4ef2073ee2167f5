"""What ``lmsh ssh [OPENSSH OPTIONS] [LOGIN@]HOST [COMMAND...]`` runs, without click: the stock
OpenSSH client with Limen's key, certificate and known_hosts, and the ProxyCommand ``lmsh
config`` writes (``limen.client.proxyssh_command.helper_command``: ``lmsh proxy ssh``'s relay
at a lower start-up cost), so every OpenSSH option works.

``lmsh ssh`` is a start-up on the user's wait like the ProxyCommand: for one host of the
profile's own cluster :func:`exec_ssh` reads the profile (JSON, no PyYAML) and replaces the
process with ``ssh`` before click, asyncio or cryptography are imported. A label selector (a
command on every matching node) and a leaf cluster (whose host CA keys are asked of the root
first) need the API: :func:`exec_ssh` returns False for them and the click command
(``limen.cli.lmsh_access.ssh``) serves them with the same options (:func:`openssh_options`).

Called by ``limen.cli.lmsh_entry`` (the fast path) and ``limen.cli.lmsh_access``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from limen.client.nodes import is_label_selector
from limen.client.profile import Profile, ProfileStore
from limen.client.proxyssh_command import helper_command
from limen.errors import BadParameter

__all__ = ["NODE_PORT", "exec_ssh", "lmsh_path", "openssh_options", "split_ssh_args",
           "ssh_argv"]

NODE_PORT = 3022
_SSH_FLAGS_WITH_VALUE = set("BbcDEeFIiJLlmOopQRSWw")


def lmsh_path() -> str:
    """This ``lmsh`` (what OpenSSH runs as ProxyCommand)."""
    here = Path(sys.argv[0])
    if here.name == "lmsh" and here.exists():
        return str(here.resolve())
    import shutil  # only here: the fast path starts as lmsh

    return shutil.which("lmsh") or "lmsh"


def openssh_options(store: ProfileStore, profile: Profile, cluster: str | None = None
                    ) -> list[str]:
    """The ``-o`` options that make OpenSSH go through Limen for this profile. A leaf cluster
    accepts the root's certificate (it trusts the root)."""
    cluster = cluster or profile.cluster
    key = store.key_path(profile.proxy, profile.user)
    cert = store.ssh_cert_path(profile.proxy, profile.user, profile.cluster)
    proxy_command = (f"{' '.join(helper_command(lmsh_path()))} --proxy {profile.proxy}"
                     f" --cluster {cluster} %r@%h:%p")
    options = {
        "UserKnownHostsFile": str(store.known_hosts), "IdentityFile": str(key),
        "CertificateFile": str(cert), "IdentitiesOnly": "yes", "ProxyCommand": proxy_command,
        "Port": str(NODE_PORT), "StrictHostKeyChecking": "yes",
        "HostKeyAlgorithms": "ssh-ed25519-cert-v01@openssh.com,"
                             "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    }
    return [arg for name, value in options.items() for arg in ("-o", f"{name}={value}")]


def split_ssh_args(args: Sequence[str]) -> tuple[list[str], str | None, str, list[str]]:
    """OpenSSH's ``[options] destination [command]``: (options, -l login, destination, command)."""
    options: list[str] = []
    login: str | None = None
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        arg = args[index]
        flag = arg[1:2]
        value: str | None = None
        if flag in _SSH_FLAGS_WITH_VALUE and len(arg) == 2:
            if index + 1 >= len(args):
                raise BadParameter(f"option {arg} needs a value")
            value = args[index + 1]
            index += 1
        if flag == "l":
            login = value if value is not None else arg[2:]
        else:
            options += [arg] if value is None else [arg, value]
        index += 1
    if index < len(args) and args[index] == "--":
        index += 1
    if index >= len(args):
        raise BadParameter("missing destination: lmsh ssh [options] [LOGIN@]HOST [COMMAND...]")
    return options, login, args[index], list(args[index + 1:])


def ssh_argv(store: ProfileStore, profile: Profile, cluster: str | None,
             args: Sequence[str]) -> tuple[list[str], str, list[str]]:
    """(``ssh`` and its options up to the host, the host as given, the command)."""
    options, login, destination, command = split_ssh_args(args)
    user, _, host = destination.rpartition("@")
    login = login or user or os.environ.get("USER") or "root"
    return ["ssh", *openssh_options(store, profile, cluster), *options, "-l", login], host, \
        command


def exec_ssh(args: Sequence[str]) -> Literal[False]:
    """Become ``ssh`` to one host of the current profile's cluster (does not return), or
    False when the click command must serve ``args`` (a leaf cluster, a label selector,
    ``--help``, an option of lmsh's own it does not read here)."""
    if not args or args[0].startswith("--"):
        return False  # --cluster, --help: the click command
    store = ProfileStore()
    profile = store.current_valid()
    base, host, command = ssh_argv(store, profile, None, args)
    if is_label_selector(host):
        return False
    os.execvp("ssh", [*base, host, *command])  # noqa: S606 (does not return)
