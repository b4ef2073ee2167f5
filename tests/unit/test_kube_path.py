"""The kube route a request names (``limen.net.kube_path``: the path prefix
``/v1/limen/<b64url cluster>/<b64url kube cluster>/``, and ``limen.net.kube_sni``: the server
name ``<hex kube cluster>.kube-limen-proxy.limen.local``): round trips for any valid names
(hypothesis), the prefix removed with the query kept, and every malformed prefix or server
name refused with BadParameter (never another exception)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.errors import BadParameter
from limen.net.kube_path import MAX_NAME, KubePath, route_path, split_target
from limen.net.kube_sni import (
    KUBE_SERVER_NAME,
    MAX_SNI_NAME,
    kube_of_server_name,
    kube_server_name,
)

NAME_CHARS = st.characters(blacklist_categories=("Cs",), min_codepoint=0x21).filter(
    lambda c: c not in "/\x7f")
NAMES = st.text(NAME_CHARS, min_size=1, max_size=40).filter(
    lambda n: len(n.encode()) <= MAX_NAME)
REST = st.sampled_from(["", "/", "/api", "/api/v1/namespaces/default/pods",
                        "/api/v1/namespaces/default/pods/web/exec?command=sh&tty=true",
                        "/apis/apps/v1/deployments?watch=true&resourceVersion=1"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@settings(max_examples=300, deadline=None)
@given(NAMES, NAMES, REST)
def test_any_valid_names_round_trip_and_the_prefix_is_removed(cluster: str, kube: str,
                                                               rest: str) -> None:
    named, target = split_target(route_path(cluster, kube) + rest)
    assert named == KubePath(cluster, kube)
    expected = rest if rest.startswith("/") else "/" + rest
    assert target == expected


def test_a_path_without_the_prefix_is_left_as_it_is() -> None:
    for target in ("/api/v1/pods", "/", "/v1/limenx/a/b", "/version?timeout=32s",
                   "/v1/other/YQ/Yg/api"):
        assert split_target(target) == (None, target)


def test_padding_is_accepted_and_the_query_kept() -> None:
    named, target = split_target("/v1/limen/bWFpbg==/cHJvZA==/api/v1/pods?watch=1")
    assert named == KubePath("main", "prod")
    assert target == "/api/v1/pods?watch=1"


@pytest.mark.parametrize(("target", "why"), [
    ("/v1/limen", "names no cluster"),
    ("/v1/limen/", "names no cluster"),
    ("/v1/limen//cHJvZA/api", "names no cluster"),
    ("/v1/limen/bWFpbg", "names no kube cluster"),
    ("/v1/limen/bWFpbg//api", "names no kube cluster"),
    ("/v1/limen/bWFpbg/cHJ*ZA/api", "not base64url"),
    ("/v1/limen/bWFp+g/cHJvZA/api", "not base64url"),
    ("/v1/limen/bWFpbg/a/api", "not base64url"),
    ("/v1/limen/bWFpbg/" + _b64(b"pr\x00od") + "/api", "control character"),
    ("/v1/limen/bWFpbg/" + _b64(b"a/b") + "/api", "'/'"),
    ("/v1/limen/bWFpbg/" + _b64(b"a b") + "/api", "a space"),
    ("/v1/limen/" + _b64(b"\xff\xfe") + "/cHJvZA/api", "not UTF-8"),
    ("/v1/limen/bWFpbg/" + _b64(b"k" * (MAX_NAME + 1)) + "/api", "longer than"),
    ("/v1/limen/bWFpbg/" + "A" * 5000 + "/api", "longer than"),
])
def test_a_malformed_prefix_is_refused(target: str, why: str) -> None:
    with pytest.raises(BadParameter, match=why):
        split_target(target)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_any_text_after_the_prefix_is_routed_or_refused_never_crashes(tail: str) -> None:
    try:
        named, target = split_target("/v1/limen/" + tail)
    except BadParameter:
        return
    assert named is not None
    assert target.startswith("/")
    assert split_target(route_path(named.cluster, named.kube) + target)[0] == named


@settings(max_examples=200, deadline=None)
@given(NAMES.filter(lambda n: len(n.encode()) <= MAX_SNI_NAME))
def test_a_server_name_names_a_kube_cluster_and_round_trips(kube: str) -> None:
    name = kube_server_name(kube)
    assert name.endswith("." + KUBE_SERVER_NAME)
    assert len(name.split(".")[0]) <= 63
    assert kube_of_server_name(name) == kube
    assert kube_of_server_name(name.upper()) == kube


def test_server_names_outside_or_malformed() -> None:
    assert kube_of_server_name(KUBE_SERVER_NAME) is None
    assert kube_of_server_name("proxy.example.com") is None
    for bad in ("zz." + KUBE_SERVER_NAME, "656." + KUBE_SERVER_NAME,
                "65.6d." + KUBE_SERVER_NAME, "00." + KUBE_SERVER_NAME,
                "2f." + KUBE_SERVER_NAME, "ff." + KUBE_SERVER_NAME,
                "6" * 64 + "." + KUBE_SERVER_NAME):
        with pytest.raises(BadParameter):
            kube_of_server_name(bad)
    with pytest.raises(BadParameter, match="name it in the path"):
        kube_server_name("k" * (MAX_SNI_NAME + 1))
