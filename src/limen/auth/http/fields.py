"""Reading fields of a JSON request body: one typed helper per shape, each raising
``BadParameter`` (HTTP 400) with the field's name. Called by the auth API's route modules
(``limen.auth.http.app``, ``limen.auth.http.join``).
"""

from __future__ import annotations

from typing import Any

from limen.errors import BadParameter

__all__ = ["optional_str", "required_str", "str_list", "ttl_seconds"]


def required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadParameter(f"{key} is required")
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadParameter(f"{key} must be a string")
    return value


def str_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadParameter(f"{key} must be a list of strings")
    return value


def ttl_seconds(body: dict[str, Any], default: int = 3600) -> int:
    value = body.get("ttl_seconds", default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadParameter("ttl_seconds must be a positive integer")
    return value
