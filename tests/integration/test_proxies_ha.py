"""Several proxies apart from auth, one node agent: the agent discovers every proxy and keeps a
tunnel to each, as separate ``limen start`` processes.

Auth, two proxies (``--roles proxy``) and a node that was given only the first proxy's
address. Each proxy announces itself to auth and tells its agents the proxy set, so the node
ends up with a tunnel to both: auth's presence record lists both proxies and ``lmsh ssh``
reaches the node through either one. One proxy is killed with SIGKILL: the node stays
reachable through the other. A third proxy starts: the node dials it within seconds."""

from __future__ import annotations

import asyncio
import getpass
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials

from .cluster import LimenCluster, LimenUser, describe, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
EXAMPLE_ROLES = Path(__file__).resolve().parents[2] / "examples" / "gitops" / "roles"
DISCOVERY = 20.0
"""Seconds for a proxy's announcement to reach the agent (every 5 s) and the agent to dial."""


def _config(path: Path, tree: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@dataclass
class Layout:
    root: Path
    auth: LimenCluster
    proxy_token: str
    pin: str
    proxies: list[LimenCluster]
    node: LimenCluster

    def new_proxy(self, name: str) -> LimenCluster:
        listeners = {k: "127.0.0.1:0" for k in ("web", "ssh_proxy", "tunnel", "postgres",
                                                 "mysql", "kube")}
        proxy = LimenCluster(self.root / name, "hub", [
            "--roles", "proxy",
            "-c", str(_config(self.root / f"{name}.yaml", {"listeners": listeners})),
            "--auth-server", self.auth.auth, "--token", self.proxy_token, "--ca-pin", self.pin,
        ], random_ports=False)
        self.proxies.append(proxy)
        return proxy.start()

    def proxy_id(self, proxy: LimenCluster) -> str:
        return HostCredentials.load(proxy.data_dir / "host").host_id

    def tunnels(self) -> set[str]:
        """The proxies auth's presence record of the node lists (read as a proxy would)."""
        creds = HostCredentials.load(self.proxies[-1].data_dir / "host")

        async def read() -> list[dict[str, Any]]:
            client = AuthClient(self.auth.auth, creds)
            try:
                answer = await client.call("GET", "/v1/presence/nodes")
            finally:
                await client.close()
            return list(answer["items"])

        items = [i for i in asyncio.run(read()) if i["resource"]["metadata"]["name"] == HOST]
        return set(items[0].get("tunnels", [])) if items else set()

    def user(self, name: str, proxy: LimenCluster) -> LimenUser:
        """A user signed up (at whichever proxy the link names) and logged in at ``proxy``
        (the CA pinned: the link's pin was for the link's proxy address)."""
        user = LimenUser(name, self.root / "users" / name, proxy.web)
        user.signup(self.auth.add_user(name, ["ops"], [LOGIN])["url"])
        user.lmsh("login", "--proxy", proxy.web, "--user", name, "--password-stdin",
                  "--otp", user.take_code(), "--ca-pin", self.pin, input=user.password + "\n")
        return user


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    root = tmp_path_factory.mktemp("proxies")
    proxy_token = secrets.token_hex(24)
    token_file = root / "proxy-token"
    token_file.write_text(proxy_token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    auth = LimenCluster(root / "auth", "hub", ["--roles", "auth", "-c", str(_config(
        root / "auth.yaml", {"auth": {"proxy_token_file": str(token_file)}}))])
    node = LimenCluster(root / "node", "hub")
    state: Layout | None = None
    try:
        auth.start()
        auth.lmctl("apply", "-f", EXAMPLE_ROLES)
        node_token = auth.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
        state = Layout(root, auth, proxy_token, node_token["ca_pin"], [], node)
        first = state.new_proxy("proxy-1")
        state.new_proxy("proxy-2")
        node.extra_args = ["--roles", "node", "--proxy", first.web,
                           "--token", node_token["token"], "--ca-pin", state.pin]
        node.start()
        yield state
    finally:
        node.kill()
        for proxy in state.proxies if state is not None else []:
            proxy.kill()
        auth.kill()


def _ssh_works(user: LimenUser, attempts: list[subprocess.CompletedProcess[str]]) -> bool:
    attempts.append(user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo reached", check=False))
    return attempts[-1].stdout.strip() == "reached"


def _wait_ssh(user: LimenUser, timeout: float, what: str) -> None:
    attempts: list[subprocess.CompletedProcess[str]] = []
    try:
        wait_for(lambda: _ssh_works(user, attempts), timeout, what, interval=0.5)
    except AssertionError:
        raise AssertionError(f"{what}\n{describe(attempts[-1])}") from None


def test_the_node_keeps_a_tunnel_to_every_proxy(layout: Layout) -> None:
    one, two = layout.proxies
    both = {layout.proxy_id(one), layout.proxy_id(two)}
    wait_for(lambda: layout.tunnels() == both, DISCOVERY,
             "the node's heartbeats relayed by both proxies", interval=0.5)
    # through the proxy the node was given, and through the one it discovered
    for proxy, name in ((one, "nina"), (two, "omar")):
        _wait_ssh(layout.user(name, proxy), 10.0, f"lmsh ssh through {proxy.web}")


def test_the_node_stays_reachable_when_a_proxy_dies(layout: Layout) -> None:
    one, two = layout.proxies
    one.kill()  # SIGKILL: no goodbye to anyone
    assert layout.node.running
    omar = LimenUser("omar", layout.root / "users" / "omar", two.web)
    result = omar.lmsh("ssh", f"{LOGIN}@{HOST}", "echo still here", check=False)
    assert result.stdout.strip() == "still here", describe(result)


def test_a_new_proxy_is_dialled_within_seconds(layout: Layout) -> None:
    three = layout.new_proxy("proxy-3")
    started = wait_for(lambda: layout.proxy_id(three) in layout.tunnels(), DISCOVERY,
                       "the node's tunnel to the new proxy", interval=0.5)
    assert started
    _wait_ssh(layout.user("ivan", three), 10.0, f"lmsh ssh through the new proxy {three.web}")
