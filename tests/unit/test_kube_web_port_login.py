"""Where ``lmsh kube login`` points kubectl (``limen.client.kube_access.kube_front``): the
proxy's kube listener when its ping announces one, else the web port with the kube front's
server name (single-port mode); golden file of that kubeconfig (``tls-server-name``).
Regenerate the golden file: LIMEN_UPDATE_GOLDEN=1 pytest this file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from limen.client.kube_access import kube_front
from limen.client.kubeconfig import KubeEntry, merge_entry
from limen.errors import ConnectionProblem
from limen.net.kube_sni import KUBE_SERVER_NAME

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kubeconfig_web_port"
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PROXY = "proxy.example:443"


def test_a_published_kube_listener_is_used() -> None:
    ping = {"kube": "0.0.0.0:3026", "kube_server_name": KUBE_SERVER_NAME}
    assert kube_front(ping, PROXY) == ("proxy.example", 3026, "")


def test_without_one_the_web_port_with_the_kube_server_name() -> None:
    ping = {"web": "127.0.0.1:3080", "kube_server_name": KUBE_SERVER_NAME}
    assert kube_front(ping, PROXY) == ("proxy.example", 443, KUBE_SERVER_NAME)
    assert kube_front(ping, "[::1]:3080") == ("::1", 3080, KUBE_SERVER_NAME)


def test_a_proxy_serving_kube_nowhere_is_said_so() -> None:
    with pytest.raises(ConnectionProblem, match="does not serve kubectl on its web port"):
        kube_front({"web": "127.0.0.1:3080"}, PROXY)


def test_the_single_port_kubeconfig_matches_the_golden_file(tmp_path: Path) -> None:
    entry = KubeEntry(limen_cluster="main", name="prod", server="https://proxy.example:443",
                      ca_pem=CA, proxy=PROXY, command="/usr/local/bin/lmsh",
                      tls_server_name=KUBE_SERVER_NAME)
    path = tmp_path / "config"
    merge_entry(path, entry)
    text = path.read_text()
    if os.environ.get("LIMEN_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    cluster = yaml.safe_load(text)["clusters"][0]["cluster"]
    assert cluster["tls-server-name"] == "kube-limen-proxy.limen.local"
