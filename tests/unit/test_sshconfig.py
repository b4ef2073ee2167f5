"""`lmsh config` output against a golden file, and the ProxyCommand target helpers."""

from __future__ import annotations

from pathlib import Path

from limen.client.proxyssh import proxy_subsystem, strip_cluster
from limen.client.sshconfig import SSHConfigInput, render_ssh_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "ssh_config"


def test_ssh_config_matches_golden_file() -> None:
    home = Path("/home/alice/.limen")
    keys = home / "keys" / "proxy.example_3080"
    text = render_ssh_config(SSHConfigInput(
        proxy="proxy.example:3080", ssh_proxy="proxy.example:3023", user="alice",
        clusters=["root", "leaf"], key_path=keys / "alice",
        cert_paths=[keys / "alice-ssh" / "root-cert.pub", keys / "alice-ssh" / "leaf-cert.pub"],
        known_hosts=home / "known_hosts", proxy_command=[
            "/usr/local/bin/python3", "-I", "-S",
            "/usr/local/lib/python3.11/site-packages/limen/client/proxyssh_main.py"]))
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_paths_with_spaces_are_quoted() -> None:
    text = render_ssh_config(SSHConfigInput(
        proxy="p:3080", ssh_proxy="p:3023", user="a", clusters=["c"],
        key_path=Path("/my keys/a"), cert_paths=[Path("/my keys/a-cert.pub")],
        known_hosts=Path("/k h"), proxy_command=["/my bin/python", "-I", "-S", "/m.py"]))
    assert 'IdentityFile "/my keys/a"' in text
    assert 'ProxyCommand "/my bin/python" -I -S /m.py --proxy p:3080' in text
    assert 'UserKnownHostsFile "/k h"' in text


def test_target_helpers() -> None:
    assert strip_cluster("web1.root", "root") == "web1"
    assert strip_cluster("web1", "root") == "web1"
    assert strip_cluster("web1.root.example", "root") == "web1.root.example"
    assert proxy_subsystem("web1", 3022, "leaf") == "proxy:web1:3022@leaf"
