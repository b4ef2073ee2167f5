"""A rotation of the JWT CA with an app behind the proxy that verifies every
``Limen-Jwt-Assertion`` with PyJWT against the proxy's ``/.well-known/jwks.json``.

In every phase ``curl`` through the proxy gets the page (the app verified the token): ``init``
publishes the new key without signing with it, ``update_clients`` signs with it (its own
``kid``; the proxy stops handing out the tokens of the old key it kept), ``standby`` drops the
old key from the JWKS, after which a token signed by it no longer verifies against what the
proxy publishes; a rollback signs with the old key again. Every change is audited and
``lmctl status`` shows the phase. The cluster, the app agent apart from auth and the app are
this module's own (``integration.test_apps_e2e.env``).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import jwt
import pytest

from .cluster import run, wait_for
from .test_apps_e2e import APP_HOST, Env, env  # noqa: F401  (the module fixture)

SWITCH_TIMEOUT = 10.0
"""The proxy reads the JWKS's signing key at most every 2 s."""


@pytest.fixture(scope="module")
def flags(env: Env) -> list[str]:  # noqa: F811
    env.alice.lmsh("apps", "login", "hello")
    return shlex.split(env.alice.lmsh("apps", "config", "hello").stdout)


def published(env: Env) -> dict[str, Any]:  # noqa: F811
    """The JWKS the proxy publishes, as an app fetches it."""
    answer = run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", env.upstream.cafile,
                  env.upstream.jwks_url], env=env.alice.env)
    keys: dict[str, Any] = json.loads(answer.stdout)
    return keys


def kids(env: Env) -> list[str]:  # noqa: F811
    return [k["kid"] for k in published(env)["keys"]]


def visit(env: Env, flags: list[str]) -> tuple[str, str]:  # noqa: F811
    """``curl`` through the proxy: the app verified the token (else the page is a 401); the
    token and its ``kid``."""
    resolve = f"{APP_HOST}:{env.web_port}:127.0.0.1"
    page = run(["curl", "-sS", "--fail-with-body", "--max-time", "20", "--resolve", resolve,
                *flags], env=env.alice.env)
    assert json.loads(page.stdout)["hello"] == "alice"
    token = env.upstream.seen[-1]["tokens"][0]
    return token, str(jwt.get_unverified_header(token)["kid"])


def rotate(env: Env, *args: str) -> str:  # noqa: F811
    return env.cluster.lmctl("auth", "rotate", "--type", "jwt", *args).stdout


def signed_by(env: Env, flags: list[str], kid: str) -> str:  # noqa: F811
    """Wait until the app gets a token of ``kid`` (every request on the way verified)."""
    def token_of_kid() -> str:
        token, signer = visit(env, flags)
        return token if signer == kid else ""

    found: str = wait_for(token_of_kid, SWITCH_TIMEOUT, f"a token signed by {kid}")
    return found


def test_a_full_jwt_ca_rotation_keeps_the_app_verifying(
        env: Env, flags: list[str]) -> None:  # noqa: F811
    old_token, old = visit(env, flags)
    assert kids(env) == [old]

    assert "phase init" in rotate(env, "--manual")
    (new,) = [k for k in kids(env) if k != old]
    assert kids(env) == [old, new]  # published before it signs
    assert visit(env, flags)[1] == old

    rotate(env, "--phase", "update_clients")
    assert kids(env) == [new, old]
    new_token = signed_by(env, flags, new)
    assert visit(env, flags)[1] == new

    rotate(env, "--phase", "update_servers")
    assert visit(env, flags)[1] == new
    assert "CA jwt rotation: update_servers" in env.cluster.lmctl("status").stdout

    rotate(env, "--phase", "standby")
    assert kids(env) == [new]
    assert visit(env, flags)[1] == new
    keys = jwt.PyJWKSet.from_dict(published(env))
    with pytest.raises(KeyError):  # a token of the old key no longer verifies
        keys[jwt.get_unverified_header(old_token)["kid"]]
    assert jwt.decode(new_token, keys[new].key, algorithms=["ES256"],
                      audience=env.upstream.audience, issuer=env.upstream.issuer,
                      options={"verify_exp": False})["sub"] == "alice"
    moves = [(e["from"], e["to"]) for e in env.cluster.audit("ca.rotation")
             if e.get("ca_type") == "jwt"]
    assert moves[-4:] == [("standby", "init"), ("init", "update_clients"),
                          ("update_clients", "update_servers"), ("update_servers", "standby")]


def test_rollback_signs_with_the_old_key_again(env: Env, flags: list[str]) -> None:  # noqa: F811
    _, old = visit(env, flags)
    rotate(env, "--manual")
    (new,) = [k for k in kids(env) if k != old]
    rotate(env, "--phase", "update_clients")
    signed_by(env, flags, new)

    assert "phase rollback" in rotate(env, "--rollback")
    assert kids(env) == [old, new]  # the new key stays published until standby
    signed_by(env, flags, old)

    rotate(env, "--phase", "standby")
    assert kids(env) == [old]
    assert visit(env, flags)[1] == old
    assert [e["to"] for e in env.cluster.audit("ca.rotation")
            if e.get("ca_type") == "jwt"][-2:] == ["rollback", "standby"]
