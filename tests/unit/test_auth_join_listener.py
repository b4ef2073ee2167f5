"""Where auth's join listener is (``limen.auth.http.join_listener``): the documented convention "the
auth port + 2" a proxy derives from ``--auth-server``, the two sockets bound together (a free
pair with ``--random-ports``), an explicit ``listeners.auth_join``, the settings that carry
them, and the default ports of /work/shared/DESIGN.md (the Kubernetes front on 3026, between
the auth API and its join listener)."""

from __future__ import annotations

import os
import socket

import pytest

from limen.auth.http.join_listener import JOIN_PORT_OFFSET, bind_auth_listeners, join_address_for
from limen.config import Listeners, load_settings
from limen.errors import BadParameter


@pytest.mark.parametrize(("auth", "expected"), [
    ("auth.example:3025", "auth.example:3027"),
    ("main-auth.limen.svc:3025", "main-auth.limen.svc:3027"),
    ("[::1]:3025", "[::1]:3027"),
    ("127.0.0.1:41999", "127.0.0.1:42001"),
    ("auth.example:65533", "auth.example:65535"),
])
def test_the_join_listener_follows_the_auth_port(auth: str, expected: str) -> None:
    assert join_address_for(auth) == expected


@pytest.mark.parametrize("auth", ["auth.example:65535", "auth.example:65534", "auth.example:0",
                                  "no-port"])
def test_no_convention_without_a_next_port(auth: str) -> None:
    with pytest.raises(BadParameter):
        join_address_for(auth)


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def test_random_ports_bind_a_pair_that_keeps_the_convention() -> None:
    for _ in range(5):
        api, join = bind_auth_listeners("127.0.0.1:0", "")
        try:
            assert _port(join) == _port(api) + JOIN_PORT_OFFSET == _port(api) + 2
        finally:
            api.close()
            join.close()


def test_an_explicit_join_address_is_bound_as_given() -> None:
    api, join = bind_auth_listeners("127.0.0.1:0", "127.0.0.1:0")
    try:
        assert _port(join) != _port(api)
    finally:
        api.close()
        join.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_busy_join_port_fails_and_frees_the_auth_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = _port(busy)
        auth = f"127.0.0.1:{taken - JOIN_PORT_OFFSET}"
        before = _open_fds()
        with pytest.raises(BadParameter, match="cannot listen on"):
            bind_auth_listeners(auth, "")
        with pytest.raises(BadParameter, match="cannot listen on"):
            bind_auth_listeners("127.0.0.1:0", f"127.0.0.1:{taken}")
        # the auth socket of each failed attempt was closed: no descriptor is left behind
        # (checked on this process, whatever other processes do with the ports meanwhile)
        assert _open_fds() == before


def test_settings_carry_both_sides() -> None:
    assert Listeners().randomized().auth_join == ""  # random ports keep the convention
    settings = load_settings(env={"LIMEN_AUTH_SERVER": "auth.example:3025",
                                  "LIMEN_AUTH_JOIN": "auth.example:4000"},
                             overrides={"listeners": {"auth_join": "0.0.0.0:3030"}})
    assert (settings.join.auth_server, settings.join.auth_join) == (
        "auth.example:3025", "auth.example:4000")
    assert settings.listeners.auth_join == "0.0.0.0:3030"
    assert load_settings(env={}).listeners.auth_join == ""
    with pytest.raises(BadParameter, match="auth_join"):
        load_settings(env={}, overrides={"join": {"auth_join": "no port"}})


def test_the_default_ports_are_those_of_the_design() -> None:
    defaults = Listeners()
    assert {name: int(address.rsplit(":", 1)[1]) for name, address in
            vars(defaults).items() if address} == {
        "web": 3080, "ssh_proxy": 3023, "tunnel": 3024, "auth": 3025, "node_ssh": 3022,
        "postgres": 5433, "mysql": 3036, "kube": 3026}
    # the join listener (not in the design's list) takes no port of the list
    assert join_address_for(defaults.auth) == "127.0.0.1:3027"
