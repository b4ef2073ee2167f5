"""The event code table: unique, well-formed, complete, and stable once released."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from limen.errors import BadParameter
from limen.events import EVENT_CODES, EventType, Severity, code_for, lookup_code
from limen.events.codes import CODE_PATTERN

# Released codes. A failure here means a code changed meaning: add a new row instead.
RELEASED = {
    "L1000I": ("user.login", True), "L1000W": ("user.login", False),
    "L1001I": ("user.create", True), "L1002I": ("user.update", True),
    "L1003I": ("user.delete", True), "L1004I": ("user.signup", True),
    "L1002W": ("user.update", False), "L1003W": ("user.delete", False),
    "L1004W": ("user.signup", False), "L1005W": ("user.locked", True),
    "L1006I": ("user.logout", True),
    "L1007I": ("mfa.add", True), "L1007W": ("mfa.add", False),
    "L1008I": ("mfa.remove", True), "L1008W": ("mfa.remove", False),
    "L1100I": ("access_request.create", True), "L1100W": ("access_request.create", False),
    "L1101I": ("access_request.review", True), "L1101W": ("access_request.review", False),
    "L1102I": ("access_request.use", True), "L1102W": ("access_request.use", False),
    "L1103I": ("access_request.expire", True),
    "L2000I": ("session.start", True), "L2001I": ("session.end", True),
    "L2002I": ("session.data", True), "L2003I": ("session.upload", True),
    "L3000I": ("exec", True), "L3000E": ("exec", False),
    "L3001I": ("scp", True), "L3001E": ("scp", False),
    "L3002I": ("sftp", True), "L3002E": ("sftp", False),
    "L3003I": ("port", True), "L3003E": ("port", False),
    "L3004I": ("client.disconnect", True), "L3005W": ("auth", False),
    "L3006W": ("route.failed", False),
    "L3100I": ("kube.request", True), "L3100W": ("kube.request", False),
    "L3101I": ("kube.session.start", True), "L3102I": ("kube.session.end", True),
    "L3200I": ("db.session.start", True), "L3200W": ("db.session.start", False),
    "L3201I": ("db.session.query", True), "L3201W": ("db.session.query", False),
    "L3202I": ("db.session.end", True),
    "L3203I": ("db.session.cancel", True), "L3203W": ("db.session.cancel", False),
    "L3204I": ("db.user.provisioned", True), "L3204W": ("db.user.provisioned", False),
    "L3205I": ("db.user.deactivated", True), "L3205E": ("db.user.deactivated", False),
    "L3300I": ("app.session.start", True), "L3300W": ("app.session.start", False),
    "L3301I": ("app.session.chunk", True),
    "L4000W": ("access.denied", False),
    "L5000I": ("join_token.create", True), "L5001I": ("join", True),
    "L5001W": ("join", False), "L5002I": ("cert.create", True),
    "L5003I": ("join_token.delete", True),
    "L5004I": ("ca.rotation", True), "L5004W": ("ca.rotation", False),
    "L6000I": ("trusted_cluster.create", True), "L6001I": ("trusted_cluster.delete", True),
    "L6002I": ("trusted_cluster.token.create", True),
    "L6003I": ("remote_cluster.online", True), "L6004W": ("remote_cluster.offline", True),
    "L6005I": ("trusted_cluster.cas", True), "L6005W": ("trusted_cluster.cas", False),
    "L7000I": ("role.created", True), "L7001I": ("role.updated", True),
    "L7002I": ("role.deleted", True),
    "L7100I": ("resource.created", True), "L7101I": ("resource.updated", True),
    "L7102I": ("resource.deleted", True),
    "L5002W": ("cert.create", False),
    "L7200I": ("lock.created", True),
    "L7201I": ("lock.updated", True),
    "L7202I": ("lock.deleted", True),
    "L7300I": ("oidc_connector.created", True),
    "L7301I": ("oidc_connector.updated", True),
    "L7302I": ("oidc_connector.deleted", True),
    "L7303I": ("github_connector.created", True),
    "L7304I": ("github_connector.updated", True),
    "L7305I": ("github_connector.deleted", True),
    "L8000I": ("gitops.sync", True), "L8000E": ("gitops.sync", False),
    "L8001W": ("gitops.rejected", False),
}


def test_codes_are_unique() -> None:
    counts = Counter(row.code for row in EVENT_CODES)
    assert [code for code, n in counts.items() if n > 1] == []


def test_one_code_per_type_and_outcome() -> None:
    counts = Counter((row.type, row.success) for row in EVENT_CODES)
    assert [key for key, n in counts.items() if n > 1] == []


def test_codes_are_well_formed_and_failures_are_not_info() -> None:
    for row in EVENT_CODES:
        assert re.match(CODE_PATTERN, row.code), row.code
        assert row.description
        if not row.success:
            assert row.severity is not Severity.INFO, row.code


def test_a_number_belongs_to_one_type() -> None:
    owner: dict[str, EventType] = {}
    for row in EVENT_CODES:
        assert owner.setdefault(row.code[:5], row.type) is row.type, row.code


def test_every_type_has_a_code() -> None:
    assert {row.type for row in EVENT_CODES} == set(EventType)


def test_released_codes_never_change() -> None:
    table = {row.code: (row.type.value, row.success) for row in EVENT_CODES}
    assert {code: table.get(code) for code in RELEASED} == RELEASED
    assert set(table) == set(RELEASED), "new code: add it to RELEASED in this test"


def test_code_for_outcomes() -> None:
    assert code_for("user.login").code == "L1000I"
    assert code_for("user.login", True).code == "L1000I"
    assert code_for(EventType.USER_LOGIN, False).code == "L1000W"
    assert code_for("access.denied").code == "L4000W"  # failure-only type
    assert code_for("access.denied", False).code == "L4000W"
    assert code_for("route.failed").code == "L3006W"  # a routing failure (failure-only)
    with pytest.raises(BadParameter, match="no success code"):
        code_for("access.denied", True)
    with pytest.raises(BadParameter, match="no failure code"):
        code_for("role.created", False)
    with pytest.raises(BadParameter, match="unknown audit event type"):
        code_for("user.logins")


def test_lookup_code() -> None:
    assert lookup_code("L3201I").type is EventType.DB_SESSION_QUERY
    with pytest.raises(BadParameter):
        lookup_code("T1000I")
