"""The refusal of a single sign-on login: what the client reads and the audit reason.

Raised by the parts of ``limen.auth.sso`` and caught by :class:`~limen.auth.sso.oidc.OIDCLogins`,
which audits ``reason`` (a short code such as ``bad_signature``; never a token, code or secret)
and answers the client with the message (HTTP 403).
"""

from __future__ import annotations

from limen.errors import AccessDenied

__all__ = ["SSOFailure"]


class SSOFailure(AccessDenied):
    """A refused single sign-on step; ``reason`` is the audit code of the refusal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
