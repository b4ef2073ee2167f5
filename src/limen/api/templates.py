"""Trait templates in role values: ``{{internal.logins}}``, ``prefix-{{external.team}}-suffix``.

A role value may hold at most one ``{{...}}`` expression, with literal text around it. The
expression language is Teleport's::

    {{internal.logins}}  {{external.team}}  {{internal["logins"]}}     a trait (both read traits[X])
    {{email.local(external.email)}}                                     part before the '@'
    {{regexp.replace(external.groups, "^admin-(.*)$", "$1")}}           Go-style $1 / ${name}

Functions nest (``email.local(regexp.replace(...))``). Expanding a template yields one value per
trait value; values that a function cannot use (no ``@``, no regexp match) and empty results are
dropped, and a missing trait expands to nothing — deny by default.

Pure code, no I/O. Called by ``limen.api.validation`` (syntax check of Role documents) and by
the RBAC engine (``parse_template`` then ``Template.expand`` with the user's traits, or
``Template.trait_values`` where the trait part must stay literal text: label matchers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from limen.errors import BadParameter

__all__ = [
    "FUNCTIONS",
    "NAMESPACES",
    "EmailLocal",
    "Expression",
    "RegexpReplace",
    "Template",
    "Variable",
    "is_template",
    "parse_template",
]

NAMESPACES = ("internal", "external")
"""Trait namespaces: ``internal`` (traits set on the Limen user), ``external`` (from SSO)."""
FUNCTIONS = ("email.local", "regexp.replace")
"""Functions a template may call."""


@dataclass(frozen=True)
class Variable:
    """``internal.NAME`` or ``external.NAME``: the values of trait ``NAME``."""

    namespace: str
    name: str

    def evaluate(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        return [str(v) for v in traits.get(self.name, ())]


@dataclass(frozen=True)
class EmailLocal:
    """``email.local(x)``: the local part of each address; values without one are dropped."""

    argument: Expression

    def evaluate(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        out = []
        for value in self.argument.evaluate(traits):
            address = value.strip()
            if address.endswith(">") and "<" in address:  # "Alice <alice@example.com>"
                address = address[address.rindex("<") + 1 : -1]
            local, at, domain = address.rpartition("@")
            if at and local and domain:
                out.append(local)
        return out


@dataclass(frozen=True)
class RegexpReplace:
    """``regexp.replace(x, pattern, replacement)``: non-matching values are dropped."""

    argument: Expression
    pattern: re.Pattern[str]
    replacement: str

    def evaluate(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        expand = _go_replacement(self.replacement)
        return [
            self.pattern.sub(expand, value)
            for value in self.argument.evaluate(traits)
            if self.pattern.search(value)
        ]


Expression = Variable | EmailLocal | RegexpReplace


@dataclass(frozen=True)
class Template:
    """A parsed role value: ``prefix{{expression}}suffix``."""

    text: str
    prefix: str
    expression: Expression
    suffix: str

    def expand(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        """Every value the template stands for, given a user's traits (may be empty)."""
        return [f"{self.prefix}{value}{self.suffix}" for value in self.trait_values(traits)]

    def trait_values(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        """The part of each expansion that comes from the user's traits, without the role's
        prefix and suffix (empty values dropped). It is literal text: a matcher must never
        read a trait value as a glob, a regular expression or the wildcard ``*`` (a user
        whose trait is ``*`` would otherwise match every label value)."""
        return [value for value in self.expression.evaluate(traits) if value]

    @property
    def trait_names(self) -> frozenset[str]:
        """The traits this template reads."""
        node: Expression = self.expression
        while not isinstance(node, Variable):  # every function has one trait argument
            node = node.argument
        return frozenset({node.name})

    def __str__(self) -> str:
        return self.text


def is_template(text: str) -> bool:
    """True when ``text`` contains template braces (well-formed or not)."""
    return "{{" in text or "}}" in text


def parse_template(text: str) -> Template | None:
    """Parse a role value: ``None`` for a plain literal, a :class:`Template` otherwise.

    Raises :class:`BadParameter` for malformed braces, more than one expression, unknown
    namespaces or functions, wrong arguments and invalid regular expressions.
    """
    if not is_template(text):
        return None
    start = text.find("{{")
    if start < 0:
        raise _bad(text, "'}}' without a matching '{{'")
    if "}}" in text[:start]:
        raise _bad(text, "'}}' without a matching '{{'")
    end = _closing(text, start + 2)
    suffix = text[end + 2 :]
    if is_template(suffix):
        raise _bad(text, "only one {{...}} expression is allowed per value")
    parser = _Parser(text, text[start + 2 : end])
    expression = parser.parse()
    return Template(text=text, prefix=text[:start], expression=expression, suffix=suffix)


def _bad(text: str, detail: str) -> BadParameter:
    return BadParameter(f"{text!r} is not a valid trait template: {detail}")


def _closing(text: str, pos: int) -> int:
    """Index of the ``}}`` closing the expression that starts at ``pos`` (skipping strings)."""
    quote = ""
    i = pos
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"`":
            quote = char
        elif text.startswith("}}", i):
            return i
        elif text.startswith("{{", i):
            raise _bad(text, "nested '{{'")
        i += 1
    raise _bad(text, "missing closing '}}'")


_TOKEN = re.compile(
    r"\s*(?:(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<string>\"(?:[^\"\\]|\\.)*\"|`[^`]*`)"
    r"|(?P<punct>[.(),\[\]]))"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # ident | string | punct | end
    value: str


class _Parser:
    """Recursive descent over the expression between the braces."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.tokens = list(self._tokenize(source))
        self.pos = 0

    def _tokenize(self, source: str) -> Iterator[_Token]:
        pos = 0
        while source[pos:].strip():
            match = _TOKEN.match(source, pos)
            if not match:
                raise _bad(self.text, f"unexpected {source[pos:].strip()[0]!r}")
            kind = match.lastgroup or "punct"
            value = match.group(kind)
            if kind == "string":
                value = self._unquote(value)
            yield _Token(kind, value)
            pos = match.end()
        yield _Token("end", "")

    def _unquote(self, literal: str) -> str:
        if literal.startswith("`"):
            return literal[1:-1]
        try:
            value = json.loads(literal)
        except ValueError:
            raise _bad(self.text, f"invalid string literal {literal}") from None
        return str(value)

    def _next(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _expect(self, value: str) -> None:
        token = self._next()
        if token.kind != "punct" or token.value != value:
            found = repr(token.value) if token.kind != "end" else "the end"
            raise _bad(self.text, f"expected {value!r}, found {found}")

    def parse(self) -> Expression:
        if self.tokens[0].kind == "end":
            raise _bad(self.text, "empty expression")
        expression = self._expression()
        token = self._next()
        if token.kind != "end":
            raise _bad(self.text, f"unexpected {token.value!r} after the expression")
        return expression

    def _expression(self) -> Expression:
        token = self._next()
        if token.kind != "ident":
            found = repr(token.value) if token.kind != "end" else "the end"
            raise _bad(self.text, f"expected a trait or a function, found {found}")
        namespace = token.value
        if namespace in NAMESPACES:
            return Variable(namespace, self._trait_name())
        if namespace not in {f.split(".")[0] for f in FUNCTIONS}:
            raise _bad(
                self.text,
                f"unknown namespace {namespace!r} (use internal.NAME, external.NAME or one "
                f"of the functions {', '.join(FUNCTIONS)})",
            )
        self._expect(".")
        name = self._next()
        function = f"{namespace}.{name.value}"
        builder = _BUILDERS.get(function)
        if name.kind != "ident" or builder is None:
            raise _bad(
                self.text, f"unknown function {function!r} (known: {', '.join(FUNCTIONS)})"
            )
        return builder(self, function, self._arguments())

    def _trait_name(self) -> str:
        token = self._next()
        if token.kind == "punct" and token.value == ".":
            name = self._next()
            if name.kind != "ident":
                raise _bad(self.text, "expected a trait name after '.'")
            return name.value
        if token.kind == "punct" and token.value == "[":
            name = self._next()
            if name.kind != "string" or not name.value:
                raise _bad(self.text, "expected a quoted trait name inside [...]")
            self._expect("]")
            return name.value
        raise _bad(self.text, "expected .NAME or [\"NAME\"] after the trait namespace")

    def _arguments(self) -> list[Expression | str]:
        self._expect("(")
        args: list[Expression | str] = []
        if self.tokens[self.pos].value == ")" and self.tokens[self.pos].kind == "punct":
            self.pos += 1
            return args
        while True:
            token = self.tokens[self.pos]
            if token.kind == "string":
                self.pos += 1
                args.append(token.value)
            else:
                args.append(self._expression())
            token = self._next()
            if token.kind == "punct" and token.value == ")":
                return args
            if token.kind != "punct" or token.value != ",":
                raise _bad(self.text, "expected ',' or ')' in the argument list")


def _email_local(parser: _Parser, name: str, args: list[Expression | str]) -> Expression:
    if len(args) != 1 or isinstance(args[0], str):
        raise _bad(parser.text, f"{name} takes one trait expression")
    return EmailLocal(args[0])


def _regexp_replace(parser: _Parser, name: str, args: list[Expression | str]) -> Expression:
    if len(args) != 3 or isinstance(args[0], str) or not all(isinstance(a, str) for a in args[1:]):
        raise _bad(
            parser.text, f"{name} takes a trait expression, a pattern string and a replacement"
        )
    pattern, replacement = str(args[1]), str(args[2])
    try:
        compiled = re.compile(pattern)
    except re.error:
        raise _bad(parser.text, f"{pattern!r} is not a valid regular expression") from None
    return RegexpReplace(args[0], compiled, replacement)


_BUILDERS: dict[str, Callable[[_Parser, str, list[Expression | str]], Expression]] = {
    "email.local": _email_local,
    "regexp.replace": _regexp_replace,
}

_GO_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z0-9_]+)\}|(?P<bare>[A-Za-z0-9_]+)|(?P<dollar>\$))"
)


def _go_replacement(template: str) -> Callable[[re.Match[str]], str]:
    """Expand a Go ``regexp.Expand`` template (``$1``, ``${1}``, ``${name}``, ``$$``) per match.

    As in Go, ``$name`` takes the longest run of letters, digits and underscores, an unknown
    group expands to the empty string and a malformed ``$`` is kept literally.
    """

    def expand(match: re.Match[str]) -> str:
        out: list[str] = []
        pos = 0
        for ref in _GO_VARIABLE.finditer(template):
            out.append(template[pos : ref.start()])
            pos = ref.end()
            if ref.group("dollar"):
                out.append("$")
                continue
            name = ref.group("braced") or ref.group("bare")
            out.append(_group(match, name))
        out.append(template[pos:])
        return "".join(out)

    return expand


def _group(match: re.Match[str], name: str) -> str:
    try:
        value = match.group(int(name)) if name.isdigit() else match.group(name)
    except IndexError:  # unknown group number or name
        return ""
    return value or ""
