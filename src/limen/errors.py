"""Limen's typed errors, one category per kind of failure, mapped once to every surface.

Every layer raises these; the surfaces (HTTP API, SSH disconnects, database error packets,
CLI exit codes, audit codes) translate them with the tables below, nowhere else::

    LimenError
    ├── BadParameter        invalid input (schema, YAML, names, flags)        HTTP 400, exit 1
    │   └── ValidationFailed  a batch of documents with per-document errors  HTTP 400, exit 1
    ├── NotFound            the object does not exist                         HTTP 404, exit 1
    ├── AlreadyExists       create of an existing object                      HTTP 409, exit 1
    ├── CompareFailed       compare-and-swap lost a race                      HTTP 409, exit 1
    ├── AccessDenied        authentication or authorization refused           HTTP 403, exit 1
    ├── ConnectionProblem   a peer cannot be reached                          HTTP 503, exit 3
    └── LimitExceeded       rate limit, lockout, quota                        HTTP 429, exit 1
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "BadParameter",
    "CompareFailed",
    "ConnectionProblem",
    "DocumentError",
    "LimenError",
    "LimitExceeded",
    "NotFound",
    "TlsVerificationFailed",
    "ValidationFailed",
    "exit_code",
    "http_status",
]


class LimenError(Exception):
    """Base of every error Limen raises on purpose. ``str(err)`` is one clear sentence."""

    http_status = 500
    code = "internal"


class BadParameter(LimenError):
    http_status = 400
    code = "bad_parameter"


class NotFound(LimenError):
    http_status = 404
    code = "not_found"


class AlreadyExists(LimenError):
    http_status = 409
    code = "already_exists"


class CompareFailed(LimenError):
    http_status = 409
    code = "compare_failed"


class AccessDenied(LimenError):
    http_status = 403
    code = "access_denied"


class ConnectionProblem(LimenError):
    http_status = 503
    code = "connection_problem"


class TlsVerificationFailed(ConnectionProblem):
    """The server's TLS certificate did not verify (``certificate_error``: the ``ssl`` error,
    a ``limen.ca.peer_role.PeerRoleRefused`` when it is not the component meant)."""

    def __init__(self, base_url: str, certificate_error: BaseException) -> None:
        super().__init__(f"cannot verify the TLS certificate of {base_url}: "
                         f"{certificate_error}")
        self.certificate_error = certificate_error


class LimitExceeded(LimenError):
    http_status = 429
    code = "limit_exceeded"


class DocumentError:
    """One problem in one document: ``file[index] path: reason (line N)`` (the format of
    docs/architecture.md, with the line where the field stands appended when it is known).

    Immutable and compared by value. A plain class, not a dataclass: every command line,
    OpenSSH's ProxyCommand included, imports this module, and ``dataclasses`` would cost each
    the import of ``inspect``."""

    __slots__ = ("index", "line", "path", "reason", "source")
    source: str
    index: int
    path: str
    reason: str
    line: int | None

    def __init__(self, source: str, index: int, path: str, reason: str,
                 line: int | None = None) -> None:
        for name, value in (("source", source), ("index", index), ("path", path),
                            ("reason", reason), ("line", line)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DocumentError is immutable: cannot set {name}")

    def _fields(self) -> tuple[str, int, str, str, int | None]:
        return (self.source, self.index, self.path, self.reason, self.line)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DocumentError):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"DocumentError(source={self.source!r}, index={self.index!r}, "
                f"path={self.path!r}, reason={self.reason!r}, line={self.line!r})")

    def __str__(self) -> str:
        where = f"{self.source}[{self.index}]"
        text = f"{where} {self.path}: {self.reason}" if self.path else f"{where}: {self.reason}"
        return f"{text} (line {self.line})" if self.line is not None else text


class ValidationFailed(BadParameter):
    """A batch of documents was rejected; ``errors`` lists every problem found."""

    code = "validation_failed"

    def __init__(self, errors: Sequence[DocumentError] | str) -> None:
        """``errors`` found here, or the message of one relayed by an API (its lines)."""
        if isinstance(errors, str):
            self.errors: list[DocumentError] = []
            super().__init__(errors or "validation failed")
            return
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors) or "validation failed")


_BY_CODE: dict[str, type[LimenError]] = {
    cls.code: cls
    for cls in (
        BadParameter, ValidationFailed, NotFound, AlreadyExists, CompareFailed,
        AccessDenied, ConnectionProblem, LimitExceeded,
    )
}


def http_status(err: BaseException) -> int:
    """The HTTP status an API answers with for ``err`` (500 for anything unexpected)."""
    return err.http_status if isinstance(err, LimenError) else 500


def exit_code(err: BaseException) -> int:
    """The CLI exit code for ``err``: 3 cannot connect, 1 denied or invalid, 1 otherwise."""
    return 3 if isinstance(err, ConnectionProblem) else 1


def from_code(code: str, message: str) -> LimenError:
    """Rebuild a typed error from an API error body (``{"error": {"code", "message"}}``)."""
    return _BY_CODE.get(code, LimenError)(message)
