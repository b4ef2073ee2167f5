"""Find literal secrets in a declared document, by field name and by content.

Access documents live in Git, in Kubernetes and in CI logs: a secret committed there is
leaked. :func:`find_secrets` walks EVERY string value and mapping key of a document and yields
``(field path, reason)`` for each secret it finds; :mod:`limen.api.validation` turns them into
errors that reject the document, on every path (Git sync, ``lmctl apply``, the auth API, the
operator). The reason never holds the secret: it names the format and shows a masked form
(the format's public prefix and the length)::

    spec.traits.team[0]: looks like a GitHub token (ghp_…, 40 characters); reference it ...

Rules, in the spirit of gitleaks / detect-secrets, tuned for few false positives:

* well-known formats anywhere (values and keys): PEM private key blocks, GitHub tokens
  (``ghp_`` ``gho_`` ``ghu_`` ``ghs_`` ``ghr_`` ``github_pat_``), GitLab ``glpat-``, AWS access
  key ids (``AKIA``/``ASIA``...), Slack ``xox?-``, Google API keys (``AIza``), Stripe live keys,
  JSON Web Tokens (``eyJ...``.``eyJ...``.sig);
* AWS secret access keys (40 characters of base64, mixed case and digits) by context: the
  field path or the text around mentions ``aws``, or the document holds an AWS key id; or,
  without context, when base64's ``/`` or ``+`` is in it and it reads as random;
* literal values under secret-like names in ``spec`` (``password``, ``token``, ``api_key``,
  ...; ``*_ref`` references and ``*_labels`` selectors excepted);
* high-entropy values under secret-like names in ``metadata`` (``metadata.labels.token``,
  ``metadata.annotations.password``): a label ``secret: "true"`` is not a secret.

Not secrets: CA pins (``sha256:<hex>``), public SSH keys and certificates, Git SHAs, UUIDs.
Pure code; called by :mod:`limen.api.validation`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limen.api.loader import FieldPath

__all__ = ["REF_HINT", "SECRET_HINT", "SecretFinding", "entropy", "find_secrets", "mask"]

REF_HINT = "reference it with token_secret_ref/credentials_ref instead"
SECRET_HINT = f"looks like a secret; {REF_HINT}"

_SECRET_NAME = re.compile(
    r"token|passw(?:or)?d|passphrase|secret|private[_-]?key|api[_-]?key|credential", re.I
)


@dataclass(frozen=True)
class _Format:
    name: str
    pattern: re.Pattern[str]
    shown: int
    """How many leading characters are the format's public prefix (shown when masking)."""


_FORMATS = (
    _Format("a GitHub token", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b"), 4),
    _Format("a GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"), 11),
    _Format("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), 6),
    _Format("an AWS access key id",
            re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
            4),
    _Format("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 5),
    _Format("a Slack webhook", re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"), 24),
    _Format("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 4),
    _Format("a Stripe secret key", re.compile(r"\b(?:sk|rk)_live_[0-9A-Za-z]{16,}"), 8),
    _Format("a JSON Web Token",
            re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{0,}"), 3),
)
_PRIVATE_KEY = re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_CONTEXT = re.compile(r"aws", re.I)
_AWS_KEY_ID = _FORMATS[3].pattern
_AWS_LONE_ENTROPY = 4.2
_MIN_ENTROPY_LENGTH = 12
_MIN_ENTROPY = 3.0
"""Bits per character a value under a secret-like name must reach to count as a secret."""


@dataclass(frozen=True)
class SecretFinding:
    path: FieldPath
    reason: str


def mask(value: str, shown: int = 0) -> str:
    """``ghp_…, 40 characters``: the public prefix (if any) and the length, never the rest."""
    prefix = value[:shown] if 0 < shown < len(value) // 2 + 1 else ""
    return f"{prefix}…, {len(value)} characters"


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def find_secrets(data: Mapping[str, Any]) -> list[SecretFinding]:
    """Every secret in a document, one finding per field path (the first reason wins)."""
    walker = _Walker(aws_document=_has_aws_key_id(data))
    for key, value in data.items():
        walker.walk(value, (key,), names=key == "spec", key_name=str(key))
    return list(walker.found.values())


class _Walker:
    def __init__(self, *, aws_document: bool) -> None:
        self.aws_document = aws_document
        self.found: dict[FieldPath, SecretFinding] = {}

    def add(self, path: FieldPath, reason: str) -> None:
        self.found.setdefault(path, SecretFinding(path, reason))

    def walk(self, value: Any, path: FieldPath, *, names: bool, key_name: str) -> None:
        if isinstance(value, str):
            reason = self.content(value, path)
            if (reason is None and path[0] == "metadata" and _SECRET_NAME.search(key_name)
                    and _random(value)):
                reason = f"looks like a secret ({mask(value)}) under the name {key_name!r}; " \
                         f"{REF_HINT}"
            if reason is not None:
                self.add(path, reason)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                text = str(key)
                at = (*path, text)
                reason = self.content(text, at)
                if reason is not None:  # a secret used as a key: named by its parent's path
                    self.add(path, f"a key {reason}")
                    continue
                is_ref = text.endswith("_ref")
                if names and not is_ref and _SECRET_NAME.search(text) and _is_literal(item):
                    self.add(at, SECRET_HINT)
                    continue
                keep = names and not is_ref and not text.endswith("_labels")
                self.walk(item, at, names=keep, key_name=text)
        elif isinstance(value, list):
            for position, item in enumerate(value):
                self.walk(item, (*path, position), names=names, key_name=key_name)

    def content(self, text: str, path: FieldPath) -> str | None:
        """Why ``text`` is a secret by its content, or None."""
        if _PRIVATE_KEY.search(text):
            return SECRET_HINT
        for secret in _FORMATS:
            match = secret.pattern.search(text)
            if match:
                return f"looks like {secret.name} ({mask(match.group(), secret.shown)}); " \
                       f"{REF_HINT}"
        for match in _AWS_SECRET.finditer(text):
            candidate = match.group()
            if not _mixed(candidate):
                continue
            around = text[max(0, match.start() - 24): match.start()]
            context = (self.aws_document or _AWS_CONTEXT.search(around) is not None
                       or any(_AWS_CONTEXT.search(str(p)) for p in path))
            # Without context, only base64's own '/' or '+' and a near-random text count.
            if context or (("/" in candidate or "+" in candidate)
                           and entropy(candidate) >= _AWS_LONE_ENTROPY):
                return f"looks like an AWS secret access key ({mask(candidate)}); {REF_HINT}"
        return None


def _mixed(text: str) -> bool:
    return (any(c.isupper() for c in text) and any(c.islower() for c in text)
            and any(c.isdigit() for c in text))


def _random(value: str) -> bool:
    """A value that reads like generated key material, not a word or a flag."""
    text = value.strip()
    if len(text) < _MIN_ENTROPY_LENGTH or " " in text:
        return False
    return entropy(text) >= _MIN_ENTROPY and any(c.isdigit() for c in text) and any(
        c.isalpha() for c in text)


def _is_literal(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True
    return isinstance(value, list) and any(_is_literal(v) for v in value)


def _has_aws_key_id(value: Any) -> bool:
    if isinstance(value, str):
        return _AWS_KEY_ID.search(value) is not None
    if isinstance(value, Mapping):
        return any(_has_aws_key_id(str(k)) or _has_aws_key_id(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_aws_key_id(v) for v in value)
    return False
