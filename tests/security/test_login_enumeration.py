"""Attack: tell which user names exist from the login answers of the proxy's web API (a real
``limen start``, ``POST /v1/webapi/login`` over HTTPS as ``lmsh login`` sends it).

* Lockout: six wrong passwords for an existing user and for a name nobody has must give the
  same status codes and the same bodies, attempt by attempt (the sixth: 429 "locked" for
  both). The bodies are compared with the user name (the caller's own input, echoed) and the
  lock's end (a clock time derived from the caller's own attempts) replaced by placeholders.
* Timing: a wrong password for an unknown name must cost the same Argon2 work as for a real
  user; the medians of a few attempts each are compared within a loose factor, so the test
  is not flaky on a busy machine but catches a skipped hash (an order of magnitude).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from typing import Any

import pytest

from integration.cluster import ClusterFactory, LimenCluster
from limen.ca.keys import generate_private_key, public_key_to_openssh
from security.attacks import assert_no_traceback, https_post

WRONG = "not-the-password-at-all"
PUBLIC_KEY = public_key_to_openssh(generate_private_key().public_key())


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters("enum")


def _login(site: LimenCluster, user: str) -> tuple[int, Any]:
    body = json.dumps({"user": user, "password": WRONG, "otp": "000000",
                       "public_key": PUBLIC_KEY, "ttl_seconds": 3600}).encode()
    return https_post(site, site.web, "/v1/webapi/login", body)


def _normalised(answer: Any, user: str) -> str:
    text = json.dumps(answer, sort_keys=True).replace(user, "<user>")
    return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC|\d{2}:\d{2}:\d{2} UTC", "<time>",
                  text)


def test_six_wrong_logins_answer_alike_for_known_and_unknown_names(site: LimenCluster) -> None:
    site.signed_up_user("victim", roles=["access"], logins=["victim"])
    answers: dict[str, list[tuple[int, str]]] = {"victim": [], "nosuchuser": []}
    for _ in range(6):
        for user, seen in answers.items():
            status, answer = _login(site, user)
            seen.append((status, _normalised(answer, user)))
    assert answers["victim"] == answers["nosuchuser"], json.dumps(answers, indent=1)
    statuses = [status for status, _ in answers["victim"]]
    assert statuses == [403] * 5 + [429], answers
    assert "locked" in answers["victim"][5][1]
    events = [e for e in site.audit("user.login") if e.get("user") == "nosuchuser"]
    assert [e["reason"] for e in events][-2:] == ["unknown_user", "unknown_user_locked"]
    assert_no_traceback(site)


def _median_seconds(site: LimenCluster, user: str, count: int) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        status, _ = _login(site, user)
        times.append(time.perf_counter() - start)
        assert status == 403
    return statistics.median(times)


def test_unknown_names_cost_the_same_password_work(site: LimenCluster) -> None:
    site.signed_up_user("timed", roles=["access"], logins=["timed"])
    _login(site, "warm-up")  # the first Argon2 of the process builds its dummy hash
    known = _median_seconds(site, "timed", 4)  # below the lockout (5)
    unknown = _median_seconds(site, "ghost", 4)
    assert 1 / 3 < unknown / known < 3, (known, unknown)
