"""Trait templates: parsing Teleport's {{...}} syntax, rejecting malformed ones, expanding them."""

from __future__ import annotations

import pytest

from limen.api.templates import (
    EmailLocal,
    RegexpReplace,
    Template,
    Variable,
    is_template,
    parse_template,
)
from limen.errors import BadParameter

TRAITS = {
    "logins": ["alice", "bob"],
    "team": ["platform"],
    "email": ["alice@example.com", "not-an-address", "Bob <bob@example.org>"],
    "groups": ["admin-ops", "dev", "admin-db", "admin-"],
}


def parsed(text: str) -> Template:
    template = parse_template(text)
    assert template is not None
    return template


@pytest.mark.parametrize("literal", ["ubuntu", "", "*", "^prod-.*$", "a}b{c", "{single}"])
def test_plain_literals_are_not_templates(literal: str) -> None:
    assert not is_template(literal)
    assert parse_template(literal) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{internal.logins}}", Variable("internal", "logins")),
        ("{{external.team}}", Variable("external", "team")),
        ("{{ internal.logins }}", Variable("internal", "logins")),
        ('{{internal["logins"]}}', Variable("internal", "logins")),
        ("{{email.local(external.email)}}", EmailLocal(Variable("external", "email"))),
    ],
)
def test_parse_forms(text: str, expected: object) -> None:
    template = parsed(text)
    assert template.expression == expected
    assert (template.prefix, template.suffix, str(template)) == ("", "", text)


def test_parse_regexp_replace_keeps_pattern_and_replacement() -> None:
    template = parsed('{{regexp.replace(external.groups, "^admin-(.*)$", "$1")}}')
    expression = template.expression
    assert isinstance(expression, RegexpReplace)
    assert expression.argument == Variable("external", "groups")
    assert expression.pattern.pattern == "^admin-(.*)$"
    assert expression.replacement == "$1"
    assert template.trait_names == frozenset({"groups"})


def test_prefix_and_suffix_apply_to_each_value() -> None:
    template = parsed("team-{{external.logins}}-dev")
    assert (template.prefix, template.suffix) == ("team-", "-dev")
    assert template.expand(TRAITS) == ["team-alice-dev", "team-bob-dev"]


def test_internal_and_external_read_the_same_traits() -> None:
    assert parsed("{{internal.logins}}").expand(TRAITS) == ["alice", "bob"]
    assert parsed("{{external.logins}}").expand(TRAITS) == ["alice", "bob"]


def test_missing_trait_expands_to_nothing() -> None:
    assert parsed("{{internal.nothing}}").expand(TRAITS) == []
    assert parsed("x-{{internal.nothing}}").expand({}) == []


def test_email_local_drops_values_that_are_not_addresses() -> None:
    assert parsed("{{email.local(external.email)}}").expand(TRAITS) == ["alice", "bob"]


def test_regexp_replace_drops_non_matching_and_empty_results() -> None:
    template = parsed('{{regexp.replace(external.groups, "^admin-(.*)$", "$1")}}')
    assert template.expand(TRAITS) == ["ops", "db"]  # "dev" does not match; "admin-" gives ""


def test_regexp_replace_go_replacement_syntax() -> None:
    template = parsed(
        '{{regexp.replace(external.groups, "^(?P<kind>admin)-(.+)$", "${2}_${kind}_$$_$9")}}'
    )
    assert template.expand(TRAITS) == ["ops_admin_$_", "db_admin_$_"]


def test_functions_nest() -> None:
    template = parsed(
        '{{email.local(regexp.replace(external.email, "@example\\\\.com$", "@corp.example"))}}'
    )
    assert template.expand(TRAITS) == ["alice"]
    assert template.trait_names == frozenset({"email"})


def test_raw_string_literal() -> None:
    template = parsed("{{regexp.replace(internal.logins, `^a(.*)$`, `A$1`)}}")
    assert template.expand(TRAITS) == ["Alice"]


def test_closing_braces_inside_a_string_literal_do_not_end_the_template() -> None:
    template = parsed('{{regexp.replace(internal.logins, "^(b)(o)b$", "}}$1")}}-x')
    assert template.suffix == "-x"
    assert template.expand(TRAITS) == ["}}b-x"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{internal.logins", "missing closing '}}'"),
        ("internal.logins}}", "'}}' without a matching '{{'"),
        ("}} {{internal.logins}}", "'}}' without a matching '{{'"),
        ("{{}}", "empty expression"),
        ("{{ }}", "empty expression"),
        ("{{internal.a}}{{internal.b}}", "only one {{...}} expression is allowed per value"),
        ("{{internal.a}}}}", "only one {{...}} expression is allowed per value"),
        ("{{internal.{{x}}}}", "nested '{{'"),
        ("{{foo.bar}}", "unknown namespace 'foo' (use internal.NAME, external.NAME or one of "
                        "the functions email.local, regexp.replace)"),
        ("{{email.remote(external.email)}}",
         "unknown function 'email.remote' (known: email.local, regexp.replace)"),
        ("{{regexp.match(external.x, \"a\")}}",
         "unknown function 'regexp.match' (known: email.local, regexp.replace)"),
        ("{{internal}}", "expected .NAME or [\"NAME\"] after the trait namespace"),
        ("{{internal.logins.extra}}", "unexpected '.' after the expression"),
        ("{{internal[logins]}}", "expected a quoted trait name inside [...]"),
        ("{{email.local(\"alice@x\")}}", "email.local takes one trait expression"),
        ("{{email.local(external.a, external.b)}}", "email.local takes one trait expression"),
        ("{{regexp.replace(external.g, \"a\")}}",
         "regexp.replace takes a trait expression, a pattern string and a replacement"),
        ("{{regexp.replace(external.g, \"(\", \"x\")}}", "'(' is not a valid regular expression"),
        ("{{email.local(external.email}}", "expected ',' or ')' in the argument list"),
        ("{{internal.logins + 1}}", "unexpected '+'"),
        ("{{regexp.replace(external.g, \"\\q\", \"x\")}}", "invalid string literal \"\\q\""),
    ],
)
def test_malformed_templates_are_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_template(text)
    assert str(caught.value) == f"{text!r} is not a valid trait template: {reason}"
