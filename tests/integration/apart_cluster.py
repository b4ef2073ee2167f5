"""A cluster whose auth, proxy and node agent run as three ``limen start`` processes (the proxy
and the node joined by token, every listener on a free port), with one signed-up user who logs
in with a password (the cluster has no second factor): what the CA rotation and trust-push
tests (``test_ca_rotation.py``, ``test_trust_push.py``) run against.
"""

from __future__ import annotations

import contextlib
import getpass
import secrets
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .cluster import LimenCluster, LimenUser, wait_for
from .test_agents_apart import EXAMPLE_ROLES, _config

__all__ = ["Apart", "apart_cluster", "password_login"]

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()


class Apart(NamedTuple):
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster
    user: LimenUser


def password_login(user: LimenUser) -> None:
    """``lmsh login`` with the password alone."""
    user.lmsh("login", "--proxy", user.proxy, "--user", user.name, "--password-stdin",
              input=user.password + "\n")


@contextlib.contextmanager
def apart_cluster(root: Path, cluster: str, username: str, *,
                  node_flags: Sequence[str] = (),
                  proxy_settings: Mapping[str, Any] | None = None) -> Iterator[Apart]:
    """Started in ``root``; ``username`` holds the example role ``ops`` and is logged in, and
    the node serves their ssh. ``proxy_settings``: the proxy's ``limen.yaml``. Every process
    is killed as the block ends."""
    proxy_token = secrets.token_hex(24)
    token_file = root / "proxy-token"
    token_file.write_text(proxy_token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    auth = LimenCluster(root / "auth", cluster, ["--roles", "auth", "-c", str(_config(
        root / "auth.yaml", {"cluster": {"second_factor": "off"},
                             "auth": {"proxy_token_file": str(token_file)}}))])
    started: list[LimenCluster] = []
    try:
        started.append(auth.start())
        auth.lmctl("apply", "-f", EXAMPLE_ROLES)
        node_token = auth.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
        pin = node_token["ca_pin"]
        proxy_config = [] if proxy_settings is None else [
            "-c", str(_config(root / "proxy.yaml", dict(proxy_settings)))]
        proxy = LimenCluster(root / "proxy", cluster, [
            "--roles", "proxy", *proxy_config, "--auth-server", auth.auth, "--token",
            proxy_token, "--ca-pin", pin])
        started.append(proxy.start())
        node = LimenCluster(root / "node", cluster, [
            "--roles", "node", "--proxy", proxy.web, "--token", node_token["token"],
            "--ca-pin", pin, *node_flags])
        started.append(node.start())
        user = LimenUser(username, root / "users" / username, proxy.web)
        link = auth.add_user(username, ["ops"], [LOGIN])["url"]
        user.lmsh("signup", "--link", link, "--password-stdin", input=user.password + "\n")
        password_login(user)
        wait_for(lambda: _serves(user), 20.0, "the node to serve ssh")
        yield Apart(auth, proxy, node, user)
    finally:
        for process in reversed(started):
            process.kill()


def _serves(user: LimenUser) -> bool:
    result = user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo ready", check=False)
    return result.returncode == 0 and result.stdout.strip() == "ready"
