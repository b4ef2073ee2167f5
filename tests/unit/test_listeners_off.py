"""An empty address turns the proxy's own database and kube listeners off (single-port mode:
their fronts are reached through the web port only), also with ``--random-ports``; the other
listeners keep requiring an address."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.config import load_settings
from limen.errors import BadParameter


def test_an_empty_address_turns_the_db_and_kube_listeners_off(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text('listeners: {kube: "", postgres: "", mysql: ""}\n')
    for random_ports in (False, True):
        listeners = load_settings(config, env={}, random_ports=random_ports).listeners
        assert (listeners.kube, listeners.postgres, listeners.mysql) == ("", "", "")
        assert listeners.web.endswith(":0" if random_ports else ":3080")


def test_the_web_listener_cannot_be_turned_off(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text('listeners: {web: ""}\n')
    with pytest.raises(BadParameter, match=r"listeners\.web"):
        load_settings(config, env={})
