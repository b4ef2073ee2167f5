"""JSON parsing with bounds, for bodies a peer controls: nesting depth and number sizes.

``json.loads`` recurses once per nesting level (30,000 nested lists end in ``RecursionError``)
and ``int()`` refuses more than 4,300 digits with a ``ValueError``: either one, raised from a
request handler, became an HTTP 500 with a traceback in the log. :func:`loads_bounded`
refuses both with :class:`~limen.errors.BadParameter` and a one-line reason, before parsing:

* depth: the structural skeleton of the text (brackets outside strings) is reduced by
  removing innermost pairs, one level per pass, with C-speed string operations; no recursion,
  at most ``MAX_DEPTH + 1`` passes;
* numbers: ``parse_int``/``parse_float`` hooks refuse literals longer than
  ``MAX_NUMBER_CHARS`` before converting them; ``NaN``/``Infinity`` (not JSON) are refused.

Called by ``limen.net.http.json_body`` (every JSON endpoint of auth and the proxy's web API)
and by ``ApiClient`` for the answers it reads.
"""

from __future__ import annotations

import json
import re
from typing import Any

from limen.errors import BadParameter

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "loads_bounded"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted."""
MAX_NUMBER_CHARS = 100
"""Longest number literal accepted (digits, sign, fraction and exponent)."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class _Refused(ValueError):
    pass


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number longer than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number longer than {MAX_NUMBER_CHARS} characters")
    return float(text)


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON value")


def nesting_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the arrays and objects of ``text`` nest deeper than ``limit``: True only when
    the brackets are balanced enough to tell (a syntax error is left to the parser)."""
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        if not skeleton:
            return False
        reduced = skeleton.replace("[]", "").replace("{}", "")
        if reduced == skeleton:
            return False  # no pair left to remove: unbalanced, the parser reports it
        skeleton = reduced
    # ``limit`` levels removed and brackets remain: deeper, if one more level goes
    return bool(skeleton) and skeleton.replace("[]", "").replace("{}", "") != skeleton


def loads_bounded(text: str, what: str = "request body") -> Any:
    """``json.loads(text)`` within the bounds above; ``BadParameter`` naming ``what``."""
    if nesting_exceeds(text):
        raise BadParameter(f"{what} nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as err:
        raise BadParameter(f"{what} refused: {err}") from None
    except json.JSONDecodeError as err:
        raise BadParameter(f"{what} is not valid JSON: {err}") from None
    except RecursionError:  # unbalanced and deep: the skeleton check could not tell
        raise BadParameter(f"{what} nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as err:  # any other conversion limit of the runtime
        raise BadParameter(f"{what} refused: {str(err).splitlines()[0]}") from None
