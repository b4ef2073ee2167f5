"""Attack: JSON bodies built to crash the parser of the web and auth APIs.

Before the fix, 30,000 nested lists (``RecursionError``), a 5,000-digit integer (Python's
``int`` refuses more than 4,300 digits: ``ValueError``) and a ``/v1/join`` body nesting its
fields answered HTTP 500 with a traceback in the daemon's log. Every JSON endpoint of both
servers reads its body through ``limen.net.http.json_body``, which must answer 400 with a
one-line reason. Sent as raw HTTPS requests to a real ``limen start``: the proxy's public
web API (no client certificate), auth's join listener ``/v1/join`` (reachable without one) and
auth's admin ``/v1/resources/apply`` (with the admin client certificate).
"""

from __future__ import annotations

import json

import pytest

from integration.cluster import ClusterFactory, LimenCluster
from limen.ca.keys import generate_private_key, public_key_to_openssh

from .attacks import assert_no_traceback, https_post

NESTED_JOIN = {"token": "t" * 32, "role": "node", "host_id": "h", "hostname": "n",
               "public_key": "ssh-ed25519 AAAA", "addresses": None}
BODIES = {
    "30,000 nested lists": (b"[" * 30_000 + b"]" * 30_000,
                            "request body nested more than 64 levels deep"),
    "10,000 nested objects": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                              "request body nested more than 64 levels deep"),
    "a 5,000-digit integer": (b'{"token": ' + b"9" * 5_000 + b"}",
                              "request body refused: a number longer than 100 digits"),
    "a nested /v1/join body": (
        json.dumps({**NESTED_JOIN, "addresses": "X"}).encode()
        .replace(b'"X"', b"[" * 200 + b'"127.0.0.1"' + b"]" * 200),
        "request body nested more than 64 levels deep"),
    "NaN": (b'{"ttl_seconds": NaN}', "request body refused: NaN is not a JSON value"),
}
WEB_PATHS = ("/v1/webapi/join", "/v1/webapi/login", "/v1/webapi/signup",
             "/v1/webapi/signup/begin", "/v1/webapi/trustedclusters/validate")


@pytest.fixture(scope="module")
def cluster(module_clusters: ClusterFactory) -> LimenCluster:
    """One cluster for the module: every attack here is refused without changing it."""
    return module_clusters("json")


def assert_refused(status: int, answer: object, reason: str) -> None:
    assert status == 400, answer
    assert isinstance(answer, dict)
    assert answer["error"] == {"code": "bad_parameter", "message": reason}


@pytest.mark.parametrize("attack", list(BODIES))
def test_hostile_json_is_a_400_on_every_listener(cluster: LimenCluster, attack: str) -> None:
    body, reason = BODIES[attack]
    for path in WEB_PATHS:
        assert_refused(*https_post(cluster, cluster.web, path, body), reason)
    assert_refused(*https_post(cluster, cluster.listeners["auth_join"], "/v1/join", body),
                   reason)  # auth's join listener (no client certificate)
    assert_refused(*https_post(cluster, cluster.auth, "/v1/resources/apply", body,
                               client_cert=True), reason)
    assert_no_traceback(cluster)


def test_the_listeners_still_answer_well_formed_requests(cluster: LimenCluster) -> None:
    well_formed = {**NESTED_JOIN, "addresses": [], "host_id": None,
                   "public_key": public_key_to_openssh(generate_private_key().public_key())}
    status, answer = https_post(cluster, cluster.web, "/v1/webapi/join",
                                json.dumps(well_formed).encode())
    assert status == 403, answer  # parsed, then refused for its token, as before
    assert "join token" in answer["error"]["message"]
    assert_no_traceback(cluster)
