"""The ProxyCommand script ``lmsh config`` writes (``python -I -S .../proxyssh_main.py``): it
reads the profile's files where ``ProfileStore`` keeps them, and what its fast path does not
serve (no login, expired certificates, a bad target) is reported exactly as ``lmsh proxy ssh``
reports it. The relay itself runs from real OpenSSH in tests/integration/test_ssh_tls_route.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from limen.client import fast_profile, proxyssh_command
from limen.client.profile import ProfileStore
from limen.client.proxyssh_command import helper_command

LMSH = str(Path(sys.executable).with_name("lmsh"))
ARGS = ["--proxy", "p.example:3080", "--cluster", "demo", "alice@web1.demo:3022"]


def _run(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIMEN_HOME"}
    return subprocess.run(argv, env={**env, "LIMEN_HOME": str(home)}, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)


def _both(home: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[str], ...]:
    return (_run([*helper_command(LMSH), *args], home),
            _run([LMSH, "proxy", "ssh", *args], home))


def test_the_written_command_is_this_interpreter_isolated_on_the_script() -> None:
    python, isolated, no_site, script = helper_command(LMSH)
    assert (python, isolated, no_site) == (sys.executable, "-I", "-S")
    assert Path(script).is_file()
    assert Path(script) == Path(proxyssh_command.__file__).with_name("proxyssh_main.py")


def test_the_files_are_where_the_profile_store_keeps_them(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    proxy, user = "p.example:3080", "alice"
    assert proxyssh_command._files(str(tmp_path), proxy, user, "demo") == tuple(map(str, (
        store.tls_cert_path(proxy, user), store.key_path(proxy, user),
        store.ca_path(proxy, "demo"), store.ssh_cert_path(proxy, user, "demo"))))
    assert fast_profile.proxy_dirname("[::1]:3080/x") == "[__1]_3080_x"


def test_not_logged_in_is_reported_as_lmsh_proxy_ssh_reports_it(tmp_path: Path) -> None:
    script, lmsh = _both(tmp_path, ARGS[2:])
    assert script.returncode == lmsh.returncode == 1
    assert script.stderr == lmsh.stderr
    assert script.stderr.startswith("error: not logged in")


def test_expired_certificates_are_reported_as_lmsh_proxy_ssh_reports_it(tmp_path: Path
                                                                        ) -> None:
    store, proxy = _profile(tmp_path, expires="2020-01-01T00:00:00+00:00")
    for path in (store.ssh_cert_path(proxy, "alice", "demo"), store.key_path(proxy, "alice"),
                 store.tls_cert_path(proxy, "alice")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("unused\n")
    script, lmsh = _both(tmp_path, ["--proxy", proxy, "alice@web1:3022"])
    assert script.returncode == lmsh.returncode == 1
    assert script.stderr == lmsh.stderr
    assert script.stderr.startswith("error: your certificates expired at 2020-01-01")


@pytest.mark.parametrize("target", ["web1:3022", "alice@web1", "alice@web1:ssh"])
def test_a_bad_target_is_reported_as_lmsh_proxy_ssh_reports_it(tmp_path: Path, target: str
                                                               ) -> None:
    _, proxy = _profile(tmp_path, expires="2999-01-01T00:00:00+00:00")
    script, lmsh = _both(tmp_path, ["--proxy", proxy, target])
    assert script.returncode == lmsh.returncode == 1
    assert script.stderr == lmsh.stderr
    assert "target must be LOGIN@HOST:PORT" in script.stderr


def test_another_command_line_is_a_usage_error(tmp_path: Path) -> None:
    done = _run([*helper_command(LMSH), "--help"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: usage: proxyssh_main.py")


def test_a_block_yaml_profile_goes_to_the_full_command_with_its_site_packages(
        tmp_path: Path) -> None:
    """The fast path reads JSON only; a profile written as block YAML by earlier versions is
    read by the full command, which needs PyYAML from site-packages (the script starts
    without ``site``)."""
    store = ProfileStore(tmp_path)
    proxy = "127.0.0.1:9"
    (tmp_path / "profiles").mkdir()
    store.profile_path(proxy).write_text(
        f"proxy: '{proxy}'\nuser: alice\ncluster: demo\nexpires: '2020-01-01T00:00:00+00:00'\n")
    store.ssh_cert_path(proxy, "alice", "demo").parent.mkdir(parents=True)
    store.ssh_cert_path(proxy, "alice", "demo").write_text("unused\n")
    script, lmsh = _both(tmp_path, ["--proxy", proxy, "alice@web1:3022"])
    assert script.returncode == lmsh.returncode == 1
    assert script.stderr == lmsh.stderr
    assert script.stderr.startswith("error: your certificates expired at 2020-01-01")


def test_the_package_directory_does_not_shadow_the_standard_library(tmp_path: Path) -> None:
    """The script adds its package's directory (site-packages) after the standard library:
    a ``json.py`` or ``ssl.py`` there is not what it imports."""
    root = tmp_path / "site-packages"
    root.mkdir()
    (root / "limen").symlink_to(Path(proxyssh_command.__file__).parents[1])
    for name in ("json", "ssl", "socket", "enum"):
        (root / f"{name}.py").write_text("raise SystemExit('shadowed')\n")
    home = tmp_path / "home"
    home.mkdir()
    done = _run([sys.executable, "-I", "-S", str(root / "limen" / "client" / "proxyssh_main.py"),
                 *ARGS], home)
    assert "shadowed" not in done.stderr
    assert done.stderr.startswith("error: no profile for proxy p.example:3080")


def _profile(home: Path, *, expires: str) -> tuple[ProfileStore, str]:
    """A JSON profile of alice in cluster demo at proxy 127.0.0.1:9 under ``home``."""
    store = ProfileStore(home)
    proxy = "127.0.0.1:9"
    (home / "profiles").mkdir()
    store.profile_path(proxy).write_text(json.dumps({
        "proxy": proxy, "user": "alice", "cluster": "demo", "expires": expires}))
    return store, proxy
