"""Listing and selecting nodes for ``lmsh ls`` and ``lmsh ssh env=dev ...``.

Called by ``limen.cli.lmsh``; the list comes from the proxy (``/v1/webapi/user/nodes``), which
returns only the nodes the user may log in to, with the logins allowed on each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from limen.errors import BadParameter

__all__ = ["is_label_selector", "matching", "parse_selector"]


def is_label_selector(text: str) -> bool:
    return "=" in text and "@" not in text


def parse_selector(terms: Sequence[str]) -> dict[str, str]:
    selector: dict[str, str] = {}
    for term in terms:
        for part in filter(None, term.split(",")):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise BadParameter(f"invalid label selector {part!r}: use key=value")
            selector[key] = value
    return selector


def matching(nodes: Sequence[Mapping[str, Any]],
             selector: Mapping[str, str]) -> list[Mapping[str, Any]]:
    return [n for n in nodes
            if all(n.get("labels", {}).get(k) == v for k, v in selector.items())]
