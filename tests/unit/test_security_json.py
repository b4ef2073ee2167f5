"""Bounded JSON bodies: deep nesting, huge numbers and non-JSON constants are refused with a
one-line BadParameter (HTTP 400), never a RecursionError or ValueError (HTTP 500).

The end-to-end attacks against running servers are in tests/security/test_json_bodies.py.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from limen.errors import BadParameter, ConnectionProblem
from limen.net.http import ApiClient, error_middleware, json_body
from limen.net.json_limits import MAX_DEPTH, loads_bounded, nesting_exceeds


@pytest.mark.parametrize("depth", [1, MAX_DEPTH])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    text = "[" * depth + "]" * depth
    assert not nesting_exceeds(text)
    value = loads_bounded(text)
    for _ in range(depth - 1):
        value = value[0]
    assert value == []
    assert loads_bounded('{"x": [{"y": [1, 2.5, "a]]]]", null]}]}') == {
        "x": [{"y": [1, 2.5, "a]]]]", None]}]}


@pytest.mark.parametrize("text", [
    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    "[" * 30_000 + "]" * 30_000,
    '{"a": ' * 30_000 + "1" + "}" * 30_000,
    "[" * 30_000,  # unbalanced: the parser's own recursion guard, still a 400
    '{"token": "t", "addresses": ' + "[" * 5_000 + "]" * 5_000 + "}",
])
def test_deep_nesting_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(BadParameter) as caught:
        loads_bounded(text)
    assert str(caught.value) == f"request body nested more than {MAX_DEPTH} levels deep"


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"a": "' + "[" * 1000 + '\\"' + "{" * 1000 + '"}'
    assert loads_bounded(text)["a"].startswith("[[[")


@pytest.mark.parametrize(("text", "reason"), [
    ('{"ttl_seconds": ' + "9" * 5_000 + "}", "a number longer than 100 digits"),
    ('{"x": -' + "9" * 5_000 + "}", "a number longer than 100 digits"),
    ('{"x": 1.' + "5" * 5_000 + "}", "a number longer than 100 characters"),
    ('{"x": NaN}', "NaN is not a JSON value"),
    ('{"x": -Infinity}', "-Infinity is not a JSON value"),
])
def test_huge_numbers_and_constants_are_refused(text: str, reason: str) -> None:
    with pytest.raises(BadParameter) as caught:
        loads_bounded(text)
    assert str(caught.value) == f"request body refused: {reason}"
    assert "\n" not in str(caught.value)


async def test_json_body_answers_400_with_the_reason() -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await json_body(request))

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/", echo)
    async with TestClient(TestServer(app)) as client:
        ok = await client.post("/", data=b'{"a": [1, 2]}')
        assert ok.status == 200
        assert await ok.json() == {"a": [1, 2]}
        for body in (b"[" * 30_000 + b"]" * 30_000, b'{"a": ' + b"1" * 5_000 + b"}",
                     b'{"a": "\xff\xfe"}'):
            answer = await client.post("/", data=body)
            assert answer.status == 400
            error = (await answer.json())["error"]
            assert error["code"] == "bad_parameter"
            assert "\n" not in error["message"]
        odd = await client.post("/", data=b"{}",
                                headers={"Content-Type": "application/json; charset=nope"})
        assert odd.status == 400


async def test_the_client_never_follows_a_redirect_with_its_body() -> None:
    """A server (even one whose certificate was verified) answering 307 to another address
    does not get the request body re-sent there: the call fails and the target hears nothing."""
    received: list[bytes] = []

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/join", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    async with TestServer(app) as server, ApiClient(str(server.make_url("")),
                                                    ssl_context=False) as client:
        with pytest.raises(ConnectionProblem, match="redirect"):
            await client.call("POST", "/v1/join", {"token": "the-secret"})
    assert received == []
