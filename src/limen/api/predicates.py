"""The ``where`` language of role rules (Teleport's rule conditions): parsed into a small tree
and evaluated over plain data, never with ``eval``.

::

    rules:
      - resources: [session]
        verbs: [list, read]
        where: 'contains(session.participants, user.metadata.name)'

Grammar (``||`` binds loosest)::

    expr    := and ( '||' and )*
    and     := unary ( '&&' unary )*
    unary   := '!' unary | primary
    primary := '(' expr ')' | NAME '(' [expr (',' expr)*] ')' | field | string | true | false
    field   := NAME ( '.' NAME | '[' string ']' )*
    string  := "..." | '...'          (escapes: \\\\ \\" \\' \\n \\t)

Every value has a type, checked when the text is parsed: ``string``, ``list`` (of strings) or
``bool``. Functions: ``contains(list, string)``, ``equals(a, b)`` (two strings or two lists).
Fields (:data:`FIELDS`): the user's ``user.metadata.name``, ``user.spec.roles`` and
``user.spec.traits.NAME`` (or ``user.spec.traits["NAME"]``), and the recorded session's
``session.*``. An unknown function or field, a wrong argument or a non-boolean result is a
:class:`~limen.errors.BadParameter` at load time. A field the evaluation context lacks is
empty (``""`` or no values), as Teleport's empty session is: a rule about sessions, asked
without one, matches no object.

Called by ``limen.api.validation`` (load-time checks) and ``limen.rbac`` (rule decisions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from limen.errors import BadParameter

__all__ = ["FIELDS", "FUNCTIONS", "Context", "Predicate", "Type", "parse_where"]

MAX_LENGTH = 1024
"""Longest ``where`` text accepted."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses, ``!`` and calls accepted."""


class Type(StrEnum):
    STRING = "string"
    LIST = "list"
    BOOL = "bool"


FIELDS: Mapping[str, Type] = {
    "user.metadata.name": Type.STRING,
    "user.spec.roles": Type.LIST,
    "session.id": Type.STRING,
    "session.participants": Type.LIST,
    "session.user": Type.STRING,
    "session.login": Type.STRING,
    "session.cluster": Type.STRING,
    "session.server_id": Type.STRING,
    "session.server_hostname": Type.STRING,
}
"""The fields a ``where`` may read, besides ``user.spec.traits.NAME`` (a list)."""
TRAITS_PREFIX = "user.spec.traits."
FUNCTIONS = ("contains", "equals")

Value = str | tuple[str, ...] | bool
Context = Mapping[str, str | Sequence[str]]
"""Field values by full name (``"session.participants"``, ``"user.spec.traits.logins"``)."""


@dataclass(frozen=True)
class _Literal:
    value: Value

    def eval(self, context: Context) -> Value:
        return self.value


@dataclass(frozen=True)
class _Field:
    name: str
    type: Type

    def eval(self, context: Context) -> Value:
        raw = context.get(self.name)
        if self.type is Type.STRING:
            return raw if isinstance(raw, str) else ""
        if raw is None or isinstance(raw, str):
            return (raw,) if raw else ()
        return tuple(str(v) for v in raw)


@dataclass(frozen=True)
class _Not:
    operand: _Node

    def eval(self, context: Context) -> Value:
        return not self.operand.eval(context)


@dataclass(frozen=True)
class _Logic:
    op: str  # "&&" or "||"
    operands: tuple[_Node, ...]

    def eval(self, context: Context) -> Value:
        if self.op == "&&":
            return all(o.eval(context) for o in self.operands)
        return any(o.eval(context) for o in self.operands)


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Node, ...]

    def eval(self, context: Context) -> Value:
        values = [a.eval(context) for a in self.args]
        if self.name == "contains":
            return isinstance(values[0], tuple) and values[1] in values[0]
        return values[0] == values[1]  # equals


_Node = _Literal | _Field | _Not | _Logic | _Call


@dataclass(frozen=True)
class Predicate:
    """A parsed ``where``: ``evaluate(context)`` answers it for one object and user."""

    text: str
    root: _Node

    def evaluate(self, context: Context) -> bool:
        return bool(self.root.eval(context))

    @property
    def fields(self) -> frozenset[str]:
        """The fields the predicate reads."""
        found: set[str] = set()
        stack: list[_Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Field):
                found.add(node.name)
            elif isinstance(node, _Not):
                stack.append(node.operand)
            elif isinstance(node, _Logic | _Call):
                stack.extend(node.operands if isinstance(node, _Logic) else node.args)
        return frozenset(found)


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<op>&&|\|\||[!(),.\[\]])
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    )""", re.VERBOSE)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class _Token:
    kind: str  # op, name, string, end
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            start = len(text) - len(text[position:].lstrip())
            char = text[start]
            if char in "\"'":
                raise BadParameter(f"unterminated string at column {start + 1}")
            raise BadParameter(f"unexpected character {char!r} at column {start + 1}")
        kind = match.lastgroup
        out.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


def _unquote(token: _Token) -> str:
    body, out, index = token.text[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            escaped = body[index + 1]
            if escaped not in _ESCAPES:
                raise BadParameter(f"unknown escape \\{escaped} in the string at column "
                                   f"{token.column}")
            out.append(_ESCAPES[escaped])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self, text: str | None = None) -> _Token:
        token = self.token
        if text is not None and token.text != text:
            found = "the end" if token.kind == "end" else repr(token.text)
            raise BadParameter(f"expected {text!r} at column {token.column}, found {found}")
        self.index += 1
        return token

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise BadParameter(f"nested deeper than {MAX_DEPTH} levels")

    def expr(self) -> tuple[_Node, Type]:
        return self.logic("||", self.conjunction)

    def conjunction(self) -> tuple[_Node, Type]:
        return self.logic("&&", self.unary)

    def logic(self, op: str, operand: Callable[[], tuple[_Node, Type]]) -> tuple[_Node, Type]:
        column = self.token.column
        node, kind = operand()
        if self.token.text != op:
            return node, kind
        nodes = [self.boolean(node, kind, op, column)]
        while self.token.text == op:
            self.take()
            column = self.token.column
            nodes.append(self.boolean(*operand(), op, column))
        return _Logic(op, tuple(nodes)), Type.BOOL

    @staticmethod
    def boolean(node: _Node, kind: Type, op: str, column: int) -> _Node:
        if kind is not Type.BOOL:
            raise BadParameter(f"{op} needs true/false on both sides; the operand at column "
                               f"{column} is a {kind.value}")
        return node

    def unary(self) -> tuple[_Node, Type]:
        if self.token.text != "!":
            return self.primary()
        column = self.take().column
        self.deeper()
        node, kind = self.unary()
        self.depth -= 1
        if kind is not Type.BOOL:
            raise BadParameter(f"! at column {column} needs true/false, not a {kind.value}")
        return _Not(node), Type.BOOL

    def primary(self) -> tuple[_Node, Type]:
        token = self.token
        if token.text == "(" and token.kind == "op":
            self.take()
            self.deeper()
            inner = self.expr()
            self.depth -= 1
            self.take(")")
            return inner
        if token.kind == "string":
            self.take()
            return _Literal(_unquote(token)), Type.STRING
        if token.kind != "name":
            found = "the end" if token.kind == "end" else repr(token.text)
            raise BadParameter(f"expected a value at column {token.column}, found {found}")
        self.take()
        if self.token.text == "(":
            return self.call(token)
        if token.text in ("true", "false") and self.token.text not in (".", "["):
            return _Literal(token.text == "true"), Type.BOOL
        return self.field(token)

    def call(self, name: _Token) -> tuple[_Node, Type]:
        if name.text not in FUNCTIONS:
            raise BadParameter(f"unknown function {name.text!r} at column {name.column} "
                               f"(known: {', '.join(FUNCTIONS)})")
        self.take("(")
        self.deeper()
        args: list[tuple[_Node, Type]] = []
        if self.token.text != ")":
            while True:
                args.append(self.expr())
                if self.token.text != ",":
                    break
                self.take()
        self.take(")")
        self.depth -= 1
        if len(args) != 2:
            raise BadParameter(f"{name.text}() at column {name.column} takes 2 arguments, "
                               f"got {len(args)}")
        (first, first_type), (second, second_type) = args
        if name.text == "contains":
            if first_type is not Type.LIST:
                raise BadParameter(f"contains() at column {name.column}: the first argument "
                                   f"must be a list, not a {first_type.value}")
            if second_type is not Type.STRING:
                raise BadParameter(f"contains() at column {name.column}: the second argument "
                                   f"must be a string, not a {second_type.value}")
        elif first_type is not second_type or first_type is Type.BOOL:
            raise BadParameter(f"equals() at column {name.column} compares two strings or two "
                               f"lists, not a {first_type.value} and a {second_type.value}")
        return _Call(name.text, (first, second)), Type.BOOL

    def field(self, first: _Token) -> tuple[_Node, Type]:
        parts = [first.text]
        while self.token.text in (".", "["):
            if self.take().text == ".":
                part = self.token
                if part.kind != "name":
                    raise BadParameter(f"expected a field name at column {part.column}")
                parts.append(self.take().text)
            else:
                part = self.token
                if part.kind != "string":
                    raise BadParameter(f"expected a quoted key at column {part.column}")
                self.take()
                parts.append(_unquote(part))
                self.take("]")
        name = ".".join(parts)
        if len(parts) == 4 and name.startswith(TRAITS_PREFIX) and parts[3]:
            return _Field(TRAITS_PREFIX + parts[3], Type.LIST), Type.LIST
        if name not in FIELDS:
            raise BadParameter(f"unknown field {name!r} at column {first.column} (known: "
                               f"{', '.join(FIELDS)}, {TRAITS_PREFIX}NAME)")
        return _Field(name, FIELDS[name]), FIELDS[name]


def parse_where(text: str) -> Predicate:
    """Parse and type-check a ``where``; :class:`BadParameter` says what is wrong and where."""
    if not isinstance(text, str) or not text.strip():
        raise BadParameter("a where condition must be a non-empty string")
    if len(text) > MAX_LENGTH:
        raise BadParameter(f"a where condition is at most {MAX_LENGTH} characters")
    parser = _Parser(text)
    root, kind = parser.expr()
    if parser.token.kind != "end":
        raise BadParameter(f"unexpected {parser.token.text!r} at column {parser.token.column}")
    if kind is not Type.BOOL:
        raise BadParameter(f"a where condition must be true or false, not a {kind.value} "
                           "(use contains(...) or equals(...))")
    return Predicate(text, root)
