"""Which databases a MySQL/MariaDB SQL text switches to with ``USE`` (pure text analysis).

Called through :mod:`limen.dbproto.mysql`, which re-exports both functions, by the db agent: it
applies the db_names rule to ``USE`` statements sent as COM_QUERY (the ``mysql`` client turns a
``USE`` typed at its prompt into COM_INIT_DB, but any client may send the statement itself).

The lexing follows the server's: whitespace, ``/* */``, ``#`` and ``-- `` comments, quoted
strings and identifiers (``''``, ``""`` and doubled backticks inside them), and executable
comments (``/*!50001 ... */``, MariaDB's ``/*M!100100 ... */``), whose content is SQL the server
runs. Where the server's behaviour depends on the session (``NO_BACKSLASH_ESCAPES``,
``ANSI_QUOTES``), :func:`use_statement_databases` lexes the text under every variant and reports
the union: it may name a database the server would not switch to (a spurious refusal), never
miss one it would. Line comments end at CR and NUL as well as LF for the same reason.

Known limit: the text is the UTF-8 decoding of the query. A session whose character set is
GBK, Big5, SJIS or CP932 (where a backslash byte can end a multibyte character) is lexed by the
server differently; the caller that cares should refuse such ``SET NAMES``/``charset`` settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["use_statement_database", "use_statement_databases"]

_IDENT_CHARS = "0-9A-Za-z_$\u0080-\U0010ffff"

# One piece of whitespace or comment. The opening of an executable comment and a closing */
# count as trivia: what stands between them is SQL. Atomic, so a long run of blanks or comments
# is matched in linear time.
_TRIVIA = (
    r"(?>[ \t\n\r\f\v]++"
    r"|/\*M?!\d*+"
    r"|\*/"
    r"|/\*(?:[^*]++|\*(?!/))*+(?:\*/|\Z)"
    r"|#[^\n\r\x00]*+"
    r"|--(?:[\x00-\x20\x7f][^\n\r\x00]*+|\Z))"
)

# Quoted spans: with backslash escapes (the default sql_mode) and without (NO_BACKSLASH_ESCAPES
# for strings; ANSI_QUOTES double-quoted identifiers). Unterminated spans run to the end.
_SINGLE_ESC = r"'(?:[^'\\]++|\\.?|'')*+(?:'|\Z)"
_SINGLE_RAW = r"'(?:[^']++|'')*+(?:'|\Z)"
_DOUBLE_ESC = r'"(?:[^"\\]++|\\.?|"")*+(?:"|\Z)'
_DOUBLE_RAW = r'"(?:[^"]++|"")*+(?:"|\Z)'
_BACKTICK = r"`(?:[^`]++|``)*+(?:`|\Z)"
_COMMENT = (
    r"/\*M?!\d*+|/\*(?:[^*]++|\*(?!/))*+(?:\*/|\Z)|#[^\n\r\x00]*+"
    r"|--(?:[\x00-\x20\x7f][^\n\r\x00]*+|\Z)"
)


def _body(single: str, double: str) -> re.Pattern[str]:
    """The rest of one statement: everything up to the next ``;`` outside quotes and comments."""
    return re.compile(
        rf"(?:[^;'\"`/#\-]++|{single}|{double}|{_BACKTICK}|{_COMMENT}|[/\-])*+", re.DOTALL
    )


# Every way the server may lex quotes: default, ANSI_QUOTES, NO_BACKSLASH_ESCAPES.
_BODIES = (
    _body(_SINGLE_ESC, _DOUBLE_ESC),
    _body(_SINGLE_ESC, _DOUBLE_RAW),
    _body(_SINGLE_RAW, _DOUBLE_RAW),
)

_USE_STATEMENT = re.compile(
    rf"(?:{_TRIVIA})*+[Uu][Ss][Ee]"
    rf"(?:(?:{_TRIVIA})++(?P<word>[{_IDENT_CHARS}]++)"
    rf"|(?:{_TRIVIA})*+(?:`(?P<backtick>(?:[^`]|``)*+)`|\"(?P<double>(?:[^\"]|\"\")*+)\"))"
    rf"(?:{_TRIVIA})*+",
    re.DOTALL,
)
_ONLY_TRIVIA = re.compile(rf"(?:{_TRIVIA})*+", re.DOTALL)
# A cheap first test: a USE statement needs the word "use" standing alone (the character before
# is checked apart: a lookbehind makes the search several times slower).
_USE_LETTERS = re.compile(rf"[Uu][Ss][Ee](?![{_IDENT_CHARS}])")
_IDENT_CHAR = re.compile(rf"[{_IDENT_CHARS}]")


def use_statement_database(sql: str) -> str | None:
    """The database named if ``sql`` is one ``USE`` statement (comments, blanks and a trailing
    ``;`` allowed; backticks unquoted, a doubled backtick inside them is one backtick), else None.

    A text of several statements gives None even when one of them is a USE: with
    CLIENT_MULTI_STATEMENTS, use :func:`use_statement_databases`.
    """
    if not _has_use_word(sql):
        return None
    spans = [s for s in _statement_spans(sql, _BODIES[0]) if not _trivia_only(sql, s)]
    if len(spans) != 1:
        return None
    return _use_target(sql, spans[0])


def use_statement_databases(sql: str) -> tuple[str, ...]:
    """Every database a ``USE`` statement anywhere in ``sql`` (any number of statements
    separated by ``;``) may switch to, in order of appearance, without duplicates."""
    if not _has_use_word(sql):
        return ()
    found: dict[str, None] = {}
    for body in _BODIES:
        for span in _statement_spans(sql, body):
            name = _use_target(sql, span)
            if name is not None:
                found.setdefault(name)
    return tuple(found)


def _has_use_word(sql: str) -> bool:
    for match in _USE_LETTERS.finditer(sql):
        start = match.start()
        if start == 0 or _IDENT_CHAR.match(sql, start - 1) is None:
            return True
    return False


def _statement_spans(sql: str, body: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of each statement of ``sql``, the ``;`` separators excluded."""
    pos, size = 0, len(sql)
    while True:
        match = body.match(sql, pos)
        end = match.end() if match is not None else pos  # the pattern matches the empty string
        yield pos, end
        if end >= size:
            return
        pos = end + 1


def _trivia_only(sql: str, span: tuple[int, int]) -> bool:
    return _ONLY_TRIVIA.fullmatch(sql, span[0], span[1]) is not None


def _use_target(sql: str, span: tuple[int, int]) -> str | None:
    match = _USE_STATEMENT.fullmatch(sql, span[0], span[1])
    if match is None:
        return None
    if match["word"] is not None:
        return match["word"]
    if match["backtick"] is not None:
        return match["backtick"].replace("``", "`")
    return str(match["double"]).replace('""', '"')
