"""TEMPORARY stand-ins for ``limen.api.templates`` and ``limen.api.validation.parse_duration``
until those modules land (then this file is deleted).

Same interfaces: ``parse_duration(text) -> timedelta``; ``parse_template(text) -> Template |
None`` (None = a plain literal; raises BadParameter when malformed) and
``Template.expand(traits) -> list[str]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr

from limen.errors import BadParameter

__all__ = ["Template", "parse_duration", "parse_template"]

_OUTER = re.compile(r"^(?P<prefix>[^{}]*)\{\{(?P<expr>[^{}]*)\}\}(?P<suffix>[^{}]*)$")
_VAR = r"(?P<ns>internal|external)(?:\.(?P<name>[\w.-]+)|\[\"(?P<qname>[^\"]+)\"\])"
_STR = r"\"(?P<{}>(?:[^\"\\]|\\.)*)\""
_PLAIN = re.compile(rf"^\s*{_VAR}\s*$")
_EMAIL = re.compile(rf"^\s*email\.local\(\s*{_VAR}\s*\)\s*$")
_REGEXP = re.compile(
    rf"^\s*regexp\.replace\(\s*{_VAR}\s*,\s*{_STR.format('pat')}\s*,\s*{_STR.format('rep')}\s*\)\s*$"
)


@dataclass(frozen=True)
class Template:
    prefix: str
    suffix: str
    trait: str
    function: str
    pattern: re.Pattern[str] | None = None
    replacement: str = ""

    def expand(self, traits: Mapping[str, Sequence[str]]) -> list[str]:
        out = []
        for value in traits.get(self.trait, ()):
            if self.function == "email.local":
                _, address = parseaddr(value)
                if "@" not in address:
                    continue
                value = address.split("@", 1)[0]
            elif self.function == "regexp.replace" and self.pattern is not None:
                if self.pattern.search(value) is None:
                    continue
                value = self.pattern.sub(self.replacement, value)
            if value:
                out.append(self.prefix + value + self.suffix)
        return out


def parse_template(text: str) -> Template | None:
    outer = _OUTER.match(text)
    if outer is None:
        if "{{" in text or "}}" in text:
            raise BadParameter(f"malformed template {text!r}")
        return None
    expr = outer["expr"]
    for function, regex in (("", _PLAIN), ("email.local", _EMAIL), ("regexp.replace", _REGEXP)):
        m = regex.match(expr)
        if m is None:
            continue
        trait = m["name"] or m["qname"]
        pattern, replacement = None, ""
        if function == "regexp.replace":
            try:
                pattern = re.compile(m["pat"].replace('\\"', '"'))
            except re.error as err:
                raise BadParameter(f"invalid regexp in {text!r}: {err}") from err
            replacement = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", m["rep"].replace("\\", "\\\\"))
        return Template(outer["prefix"], outer["suffix"], trait, function, pattern, replacement)
    raise BadParameter(f"unsupported template expression {expr!r}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Go-style durations: ``8h``, ``30m``, ``1h30m``, ``90s``."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    if not text or pos != len(text):
        raise BadParameter(f"invalid duration {text!r}")
    return timedelta(seconds=total)
