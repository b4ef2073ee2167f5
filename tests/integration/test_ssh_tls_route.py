"""The SSH proxy through the web port (ALPN ``limen-ssh-proxy``, one TLS connection, the
user's SSH session the only SSH layer), with one ``limen start`` (its node behind its tunnel):

- stock ``ssh`` with the ``lmsh config`` block reaches the node through the TLS route even
  when the profile's SSH-front address points nowhere (so no SSH-inside-SSH fallback was
  used), and the session is audited by the node as before;
- a refusal reaches the user as ``lmsh: <reason>`` and is audited with ``via: tls``;
- ``http/1.1`` and no ALPN on the same port still serve the web API;
- the ProxyCommand itself (``lmsh proxy ssh``, started by OpenSSH for every connection)
  imports neither asyncio, asyncssh, aiohttp nor cryptography's X.509 (``limen.ca``), nor
  PyYAML, ``dataclasses`` (``inspect``), ``tempfile`` or ``shutil``; the line ``lmsh config``
  writes (``python -I -S .../proxyssh_main.py``) not even ``site``, ``typing`` or ``pathlib``.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, run, wait_for
from .ssh_tls_client import (
    HOST,
    LOGIN,
    context,
    exchange,
    ops_user,
    request,
    start_site,
    user_credentials,
)

NAME = "tlsr"


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    return start_site(module_clusters, NAME)


@pytest.fixture(scope="module")
def olga(site: LimenCluster) -> LimenUser:
    return ops_user(site, "olga")


@pytest.fixture(scope="module")
def ssh_config(olga: LimenUser) -> Path:
    """``lmsh config``, with the profile's SSH-front address made unreachable."""
    path = olga.home / "ssh_config"
    path.write_text(olga.lmsh("config").stdout, encoding="utf-8")
    profile = next((olga.home / "profiles").glob("*.yaml"))
    doc = json.loads(profile.read_text(encoding="utf-8"))  # lmsh writes JSON (YAML too)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        doc["ssh_proxy"] = f"127.0.0.1:{unused.getsockname()[1]}"
    profile.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_stock_ssh_goes_through_the_tls_route(site: LimenCluster, olga: LimenUser,
                                              ssh_config: Path) -> None:
    result = run(["ssh", "-F", ssh_config, f"{LOGIN}@{HOST}.{NAME}", "echo via-tls; exit 3"],
                 env=olga.env, check=False)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "via-tls\n"
    assert "lmsh:" not in result.stderr
    started = wait_for(lambda: [e for e in site.audit("session.start", user="olga")
                                if e.get("command") == "echo via-tls; exit 3"], 20.0,
                       "the node's session.start for olga")
    assert started[-1]["user"] == "olga"


def test_scp_through_the_tls_route(olga: LimenUser, ssh_config: Path, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    back = tmp_path / "back.bin"
    remote = f"/tmp/limen-tls-route-{id(tmp_path)}.bin"
    run(["scp", "-F", ssh_config, source, f"{LOGIN}@{HOST}.{NAME}:{remote}"], env=olga.env)
    run(["scp", "-F", ssh_config, f"{LOGIN}@{HOST}.{NAME}:{remote}", back], env=olga.env)
    Path(remote).unlink(missing_ok=True)
    assert back.read_bytes() == source.read_bytes()


def test_a_refusal_is_printed_and_audited(site: LimenCluster, olga: LimenUser,
                                          ssh_config: Path) -> None:
    result = run(["ssh", "-F", ssh_config, f"{LOGIN}@nosuch.{NAME}", "true"], env=olga.env,
                 check=False)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == "lmsh: unknown node 'nosuch'", result.stderr
    events = [e for e in site.audit("route.failed", user="olga") if e.get("target") == "nosuch"]
    assert events, "route.failed for nosuch"
    assert events[-1]["via"] == "tls"
    assert events[-1]["reason"] == "unknown node 'nosuch'"


def test_the_raw_route_answers_ok_then_the_nodes_banner(site: LimenCluster, olga: LimenUser,
                                                         tmp_path: Path) -> None:
    answer = exchange(site, user_credentials(olga, tmp_path), request(LOGIN, HOST),
                      until=b"\r\n")
    assert answer.alpn == "limen-ssh-proxy"
    assert answer.line == "OK"
    assert answer.rest.startswith(b"SSH-2.0-")


@pytest.mark.parametrize("alpn", [["http/1.1"], []])
def test_http_on_the_same_port_still_serves_the_web_api(site: LimenCluster, olga: LimenUser,
                                                        tmp_path: Path, alpn: list[str]
                                                        ) -> None:
    host, port = site.web.rsplit(":", 1)
    ctx = context(site, user_credentials(olga, tmp_path))
    if not alpn:
        ctx = ssl.create_default_context(cafile=str(site.data_dir / "admin" / "cas.pem"))
        ctx.check_hostname = False
    else:
        ctx.set_alpn_protocols(alpn)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=20)
    try:
        conn.request("GET", "/v1/webapi/ping")
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200
        assert body["cluster"] == NAME
        assert conn.sock is not None
        assert conn.sock.selected_alpn_protocol() == (alpn[0] if alpn else None)
    finally:
        conn.close()


def test_the_proxy_command_imports_no_heavy_module(site: LimenCluster, olga: LimenUser) -> None:
    """The line ``lmsh config`` writes is served by ``limen.cli.lmsh_entry`` before click."""
    done = subprocess.run([command("lmsh"), "proxy", "ssh", "--proxy", olga.proxy, "--cluster",
                           site.name, f"{LOGIN}@{HOST}:3022"],
                          env={**olga.env, "PYTHONPROFILEIMPORTTIME": "1"},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(b"SSH-2.0-")
    imported = _imported(done.stderr)
    assert "limen.client.proxyssh_tls" in imported
    heavy = [m for m in imported
             if m.split(".")[0] in ("asyncio", "asyncssh", "aiohttp", "click", "yaml")
             or m in ("limen.cli.lmsh", "limen.cli.common", "dataclasses", "inspect",
                      "tempfile", "shutil")
             or m.startswith(("cryptography.x509", "cryptography.hazmat", "limen.ca"))]
    assert heavy == []


def test_the_written_proxy_command_runs_without_site_or_heavy_modules(
        site: LimenCluster, olga: LimenUser, ssh_config: Path) -> None:
    """The ProxyCommand line of the ``lmsh config`` block (``python -I -S
    .../proxyssh_main.py``), run as OpenSSH runs it, imports the standard library and Limen's
    relay only: no ``site``, ``typing`` or ``pathlib`` (the profile is read with ``os`` and
    ``json``), no click, asyncio, PyYAML or cryptography. (Stock ``ssh`` runs it above.)"""
    lines = [line.split(None, 1)[1] for line in ssh_config.read_text().splitlines()
             if line.strip().startswith("ProxyCommand") and f"--cluster {NAME} " in line]
    argv = shlex.split(lines[0].replace("%r@%h:%p", f"{LOGIN}@{HOST}.{NAME}:3022"))
    assert argv[1:3] == ["-I", "-S"]
    assert argv[3].endswith("limen/client/proxyssh_main.py")
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=olga.env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(b"SSH-2.0-")
    imported = _imported(done.stderr)
    assert "limen.client.proxyssh_tls" in imported
    heavy = [m for m in imported
             if m.split(".")[0] in ("asyncio", "asyncssh", "aiohttp", "click", "yaml",
                                    "cryptography", "site", "pathlib", "typing")
             or m.split(".")[:2] in (["limen", "ca"], ["limen", "cli"])
             or m == "limen.client.profile"]
    assert heavy == []


def test_lmsh_ssh_to_one_node_execs_openssh_before_click(site: LimenCluster,
                                                          olga: LimenUser) -> None:
    """``lmsh ssh LOGIN@HOST CMD`` becomes ``ssh`` in ``limen.cli.lmsh_entry``: it loads
    neither click, asyncio nor cryptography's X.509, and gives OpenSSH the ProxyCommand
    ``lmsh config`` writes (``python -I -S .../proxyssh_main.py``, which ignores
    ``PYTHONPROFILEIMPORTTIME``: its imports are checked by the test above)."""
    done = subprocess.run([command("lmsh"), "ssh", f"{LOGIN}@{HOST}", "echo", "fast path"],
                          env={**olga.env, "PYTHONPROFILEIMPORTTIME": "1"},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == b"fast path\n"
    imported = _imported(done.stderr)
    assert "limen.client.ssh_command" in imported
    assert "limen.client.proxyssh_tls" not in imported  # the ProxyCommand runs isolated (-I)
    heavy = [m for m in imported
             if m.split(".")[0] in ("asyncio", "asyncssh", "aiohttp", "click", "yaml")
             or m in ("limen.cli.lmsh", "limen.cli.common", "limen.cli.lmsh_access")
             or m.startswith(("cryptography.x509", "cryptography.hazmat", "limen.ca"))]
    assert heavy == []


def _imported(stderr: bytes) -> list[str]:
    """The modules a ``-X importtime`` run imported, from its stderr."""
    return re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", stderr.decode(),
                      re.MULTILINE)
