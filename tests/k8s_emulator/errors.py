"""Kubernetes API errors (``kind: Status`` answers) raised by the API emulator's store.

Used by ``store.py`` (raises them), ``apiserver.py`` (renders them as the
HTTP answer a real kube-apiserver gives) and the test helpers in ``fixtures.py``
(which raise them to the test, so a test can check ``err.code == 409``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError"]


class ApiError(Exception):
    """A failed API call: HTTP ``code``, Kubernetes ``reason`` and ``message``."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        """The ``v1 Status`` body a real API server sends with this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, group_resource: str, name: str) -> ApiError:
        group, _, plural = _split(group_resource)
        return cls(
            404,
            "NotFound",
            f'{group_resource} "{name}" not found',
            {"name": name, "group": group, "kind": plural},
        )

    @classmethod
    def already_exists(cls, group_resource: str, name: str) -> ApiError:
        group, _, plural = _split(group_resource)
        return cls(
            409,
            "AlreadyExists",
            f'{group_resource} "{name}" already exists',
            {"name": name, "group": group, "kind": plural},
        )

    @classmethod
    def conflict(cls, group_resource: str, name: str, why: str | None = None) -> ApiError:
        group, _, plural = _split(group_resource)
        why = why or (
            "the object has been modified; please apply your changes "
            "to the latest version and try again"
        )
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {group_resource} "{name}": {why}',
            {"name": name, "group": group, "kind": plural},
        )

    @classmethod
    def invalid(cls, kind: str, name: str, problem: str) -> ApiError:
        return cls(
            422, "Invalid", f'{kind} "{name}" is invalid: {problem}', {"name": name, "kind": kind}
        )

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)


def _split(group_resource: str) -> tuple[str, str, str]:
    plural, _, group = group_resource.partition(".")
    return group, ".", plural
