"""The ``where`` language of role rules: parsing, evaluation, load-time errors with the field
path, no way to run code, and rule decisions (allow and deny) that depend on it."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from limen.api.loader import SourceDocument, load_path
from limen.api.predicates import MAX_DEPTH, parse_where
from limen.api.resources import Kind, Resource
from limen.api.validation import validate
from limen.errors import BadParameter, ValidationFailed
from limen.rbac.roleset import RoleSet
from limen.rbac.rule_context import rule_context, session_fields
from rbac_roles import role

PARTICIPANT = "contains(session.participants, user.metadata.name)"


def ctx(caller: str = "alice", **session: Any) -> dict[str, Any]:
    """The context of ``caller`` asking about a session with metadata ``session``."""
    return rule_context(caller, ["access"], {"logins": ["alice", "ubuntu"], "team": ["db"]},
                        session=session or None)


# -- parsing and evaluation ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "context", "expected"), [
    (PARTICIPANT, ctx(caller="alice", participants=["bob", "alice"]), True),
    (PARTICIPANT, ctx(caller="carol", participants=["bob", "alice"]), False),
    (PARTICIPANT, ctx(caller="alice"), False),  # no session: no participant
    ('equals(session.login, "root")', ctx(login="root"), True),
    ("equals(session.login, 'root')", ctx(login="ubuntu"), False),
    ('!equals(session.login, "root")', ctx(login="ubuntu"), True),
    ('equals(session.user, user.metadata.name) && equals(session.login, "ubuntu")',
     ctx(caller="alice", user="alice", login="ubuntu"), True),
    ('equals(session.user, user.metadata.name) && equals(session.login, "root")',
     ctx(caller="alice", user="alice", login="ubuntu"), False),
    ('equals(session.login, "root") || contains(user.spec.roles, "access")', ctx(), True),
    ('!(equals(session.login, "a") || equals(session.login, "b"))', ctx(login="b"), False),
    ('contains(user.spec.traits.logins, "ubuntu")', ctx(), True),
    ('contains(user.spec.traits["team"], "db")', ctx(), True),
    ('contains(user.spec.traits["missing"], "db")', ctx(), False),
    ("equals(user.spec.traits.logins, user.spec.traits.logins)", ctx(), True),
    ("true && !false", {}, True),
    ('equals("a\\"b", \'a"b\')', {}, True),
    ('!!equals(session.id, "s1")', ctx(session_id="s1"), True),
])
def test_evaluation(text: str, context: dict[str, Any], expected: bool) -> None:
    assert parse_where(text).evaluate(context) is expected


def test_the_session_user_is_the_participant_when_no_list_was_recorded() -> None:
    fields = session_fields({"user": "alice", "login": "root", "session_id": "s1"})
    assert fields["session.participants"] == ("alice",)
    assert fields["session.user"] == "alice"
    assert fields["session.id"] == "s1"
    assert session_fields({"participants": ["a", "b"], "user": "a"})[
        "session.participants"] == ("a", "b")


def test_fields_read_are_reported() -> None:
    assert parse_where(PARTICIPANT).fields == {"session.participants", "user.metadata.name"}


@pytest.mark.parametrize(("text", "message"), [
    ("system(\"id\")", "unknown function 'system'"),
    ("__import__('os')", "unknown function '__import__'"),
    ("contains(session.owner, user.metadata.name)", "unknown field 'session.owner'"),
    ("contains(session.participants, user.name)", "unknown field 'user.name'"),
    ("session.__class__", "unknown field"),
    ("equals(session.user.__class__, \"x\")", "unknown field"),
    ("contains(session.user, \"a\")", "first argument must be a list"),
    ("contains(session.participants, session.participants)", "second argument must be a "
                                                             "string"),
    ("equals(session.user, session.participants)", "compares two strings or two lists"),
    ("equals(session.user)", "takes 2 arguments"),
    ("session.user", "must be true or false"),
    ('"yes"', "must be true or false"),
    ('session.user && true', "needs true/false on both sides"),
    ("!session.user", "needs true/false"),
    ("contains(session.participants, user.metadata.name", "expected ')'"),
    ("(true", "expected ')'"),
    ("true true", "unexpected 'true'"),
    ('equals(session.user, "abc)', "unterminated string"),
    ("equals(session.user, 1)", "unexpected character '1'"),
    ("equals(session.login, \"a\") ; rm -rf /", "unexpected character ';'"),
    ("equals(session.login, `a`)", "unexpected character '`'"),
    ('equals(session.login, "\\x41")', "unknown escape"),
    ("a == b", "unexpected character '='"),
    ("", "non-empty"),
    ("   ", "non-empty"),
    ("true || " * 200 + "true", "at most 1024 characters"),
    ("!" * (MAX_DEPTH + 1) + "true", "nested deeper"),
    ("(" * (MAX_DEPTH + 1) + "true" + ")" * (MAX_DEPTH + 1), "nested deeper"),
])
def test_invalid_conditions_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(BadParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_where(text)


def test_no_text_is_ever_evaluated_as_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the where language must not run Python code")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, forbidden)
    # parse and evaluate with the builtins that would run code made to fail
    assert parse_where(PARTICIPANT).evaluate(ctx(participants=["alice"])) is True
    with pytest.raises(BadParameter):
        parse_where("__import__('os').system('touch /tmp/pwned')")
    # a field value that looks like code is data
    crafted = parse_where('equals(session.login, "__import__(\'os\')")')
    assert crafted.evaluate(ctx(login="__import__('os')")) is True


# -- load-time validation: the file, document, field path and reason ------------------------

ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: {name}
spec:
  {side}:
    rules:
      - resources: [session]
        verbs: [read]
        where: '{where}'
"""


def _load(tmp_path: Path, **values: str) -> list[Resource]:
    path = tmp_path / "roles.yaml"
    path.write_text(ROLE.format(**values))
    return validate(load_path(path))


@pytest.mark.parametrize("side", ["allow", "deny"])
def test_a_bad_where_fails_validation_with_its_path(tmp_path: Path, side: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        _load(tmp_path, name="r", side=side, where="contains(session.owner, user.metadata.name)")
    text = str(caught.value)
    assert f"roles.yaml[0] spec.{side}.rules[0].where:" in text
    assert "unknown field 'session.owner'" in text
    assert "(line 10)" in text


def test_a_good_where_loads(tmp_path: Path) -> None:
    (role,) = _load(tmp_path, name="r", side="allow", where=PARTICIPANT)
    assert role.spec["allow"]["rules"][0]["where"] == PARTICIPANT


# -- decisions --------------------------------------------------------------------------------

def _role(name: str, allow: dict[str, Any] | None = None,
          deny: dict[str, Any] | None = None) -> Resource:
    (validated,) = validate([SourceDocument("<test>", 0, 1, role(name, allow, deny).to_document())])
    return validated


OWN_SESSIONS = _role("own", allow={"rules": [{"resources": ["session"], "verbs": ["list", "read"],
                                              "where": PARTICIPANT}]})
ALL_SESSIONS = _role("all", allow={"rules": [{"resources": ["session"],
                                              "verbs": ["list", "read"]}]})
NO_ROOT = _role("noroot", deny={"rules": [{"resources": ["session"], "verbs": ["read"],
                                           "where": 'equals(session.login, "root")'}]})


def test_allow_rule_with_where_grants_only_where_it_holds() -> None:
    roles = RoleSet.from_roles([OWN_SESSIONS], {})
    own = roles.check_rule("session", "read", ctx(caller="alice", participants=["alice"]))
    assert own.allowed
    assert own.role == "own"
    other = roles.check_rule("session", "read", ctx(caller="alice", participants=["bob"]))
    assert not other.allowed
    assert "only where contains(session.participants, user.metadata.name)" in other.reason
    # asked about no particular session, the where holds for none
    assert not roles.check_rule("session", "read").allowed
    # but a listing may be asked for: some sessions could be readable
    assert roles.check_rule_possible("session", "list").allowed
    assert not roles.check_rule_possible("event", "list").allowed


def test_deny_rule_with_where_wins_only_where_it_holds() -> None:
    roles = RoleSet.from_roles([ALL_SESSIONS, NO_ROOT], {})
    root = roles.check_rule("session", "read", ctx(login="root", participants=["alice"]))
    assert (root.allowed, root.role, root.rule) == (False, "noroot", "deny.rules")
    assert "where equals(session.login, \"root\")" in root.reason
    assert roles.check_rule("session", "read", ctx(login="ubuntu")).allowed
    # a deny with a where does not rule out a listing: it is filtered object by object
    assert roles.check_rule_possible("session", "read").allowed
    assert not RoleSet.from_roles([ALL_SESSIONS, _role("never", deny={"rules": [
        {"resources": ["session"], "verbs": ["read"]}]})], {}).check_rule_possible(
        "session", "read").allowed


def test_a_bad_where_in_a_stored_deny_rule_denies_everything() -> None:
    broken = Resource(Kind.ROLE, "broken", spec={
        "allow": {"rules": [{"resources": ["*"], "verbs": ["*"]}]},
        "deny": {"rules": [{"resources": ["session"], "verbs": ["read"],
                            "where": "nonsense("}]}})
    roles = RoleSet.from_roles([broken], {})
    assert roles.warnings
    decision = roles.check_rule("role", "list")
    assert not decision.allowed
    assert "invalid" in decision.reason


def test_a_bad_where_in_a_stored_allow_rule_grants_nothing() -> None:
    bad = Resource(Kind.ROLE, "bad", spec={"allow": {"rules": [
        {"resources": ["session"], "verbs": ["read"], "where": "unknown(x)"}]}})
    roles = RoleSet.from_roles([bad], {})
    assert any("unknown function" in w for w in roles.warnings)
    assert not roles.check_rule("session", "read", ctx(participants=["alice"])).allowed
