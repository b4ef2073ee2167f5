"""The audit log's hash chain and signed checkpoints: the on-disk format, shared by the writer
(:class:`~limen.events.FileLog`) and the verifier (:mod:`limen.events.verify`).

Every line of a day file ends in a ``chain`` member that links it to the line before::

    {"event":"user.login",...,"chain":{"seq":7,"prev":"<hash of line 6>","hash":"<h7>"}}
    h7 = sha256("<prev>\\n7\\n" + the line's bytes without its chain member)
    prev of line 1 = seed(file name) = sha256("limen-audit-chain-v1\\0" + "2026-11-24.jsonl")

The hash covers the exact bytes of the line (no re-serialisation), so editing any byte of an
event, deleting, inserting or moving a line breaks a link. The chain alone is not a secret:
whoever can write the file can recompute it from an edit onwards. That is what checkpoints
stop: every N lines or T seconds, when the writer leaves a file (a new day) and when it closes,
it appends a checkpoint line, chained like an event and signed by auth's JWT CA key::

    {"checkpoint":{"v":1,"reason":"periodic","file":"2026-11-24.jsonl","lines":6,
                   "head":"<h6>","time":"...Z"},"kid":"<RFC 7638 thumbprint>","alg":"ES256",
     "sig":"<base64url>","chain":{"seq":7,...}}

The signature covers ``limen-audit-checkpoint-v1\\n`` + the checkpoint object as canonical JSON
(sorted keys, compact). ``reason`` is ``periodic``, ``rotate`` (the writer moved to another
file), ``close`` (clean shutdown), ``resume`` (a writer found the file not closed: after a crash)
or ``torn`` (a writer found a torn last line and resumes the chain after it; ``after`` holds the
torn line's sha256 and length). A ``torn`` marker is written even without a key (then the next
signed checkpoint covers it). Used by ``limen.events.filelog``, ``limen.events.verify`` and
``limen.events.search`` (which hides these members).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "CHAIN_KEY",
    "CHECKPOINT_KEY",
    "REASONS",
    "SEALING_REASONS",
    "ChainedLine",
    "CheckpointSigner",
    "KeySigner",
    "PublicKey",
    "Tail",
    "chain_line",
    "chain_lines",
    "check_signature",
    "checkpoint_body",
    "link_hash",
    "read_tail",
    "seed_for",
]

CHAIN_KEY = "chain"
CHECKPOINT_KEY = "checkpoint"
REASONS = ("periodic", "rotate", "close", "resume", "torn")
SEALING_REASONS = frozenset({"rotate", "close", "resume", "torn"})
"""Checkpoints a writer leaves a file with: a file not being written must end in one."""

_SEED_PREFIX = b"limen-audit-chain-v1\0"
_SIGNING_PREFIX = b"limen-audit-checkpoint-v1\n"
_SUFFIX = re.compile(
    rb',"chain":\{"seq":([1-9][0-9]{0,17}),"prev":"([0-9a-f]{64})","hash":"([0-9a-f]{64})"\}\}$'
)
_LINE = b'%s,"' + CHAIN_KEY.encode() + b'":{"seq":%d,"prev":"%s","hash":"%s"}}\n'
"""A line: the body without its closing brace, the chain member, the newline."""
_TAIL_CHUNK = 65536
_TAIL_SCAN_LIMIT = 64 * 1024 * 1024
"""How far back a writer looks for the last chained line behind unchained ones."""

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def seed_for(file_name: str) -> str:
    """The ``prev`` of a file's first line: binds the chain to the file's name (its day)."""
    return hashlib.sha256(_SEED_PREFIX + file_name.encode()).hexdigest()


def link_hash(prev: str, seq: int, body: bytes) -> str:
    return hashlib.sha256(f"{prev}\n{seq}\n".encode() + body).hexdigest()


def chain_line(body: bytes, prev: str, seq: int) -> tuple[bytes, str]:
    """``body`` (one compact JSON object) with its chain member, plus the line's hash."""
    data, digest = chain_lines((body,), prev, seq - 1)
    return data[:-1], digest


def chain_lines(bodies: Iterable[bytes], prev: str, seq: int) -> tuple[bytes, str]:
    """``bodies`` chained after the line ``seq`` whose hash is ``prev``: the lines, each with
    its chain member and a newline, in one ``bytes``; and the last line's hash. FileLog
    writes a batch's lines this way: about a microsecond a line, half of what a call per
    line costs."""
    sha256 = hashlib.sha256
    head = prev.encode()
    parts: list[bytes] = []
    append = parts.append
    for body in bodies:
        if body[:1] != b"{" or body[-1:] != b"}" or body == b"{}":
            raise ValueError("an audit line must be a non-empty JSON object")
        seq += 1
        digest = sha256(b"%s\n%d\n%s" % (head, seq, body)).hexdigest().encode()
        append(_LINE % (body[:-1], seq, head, digest))
        head = digest
    return b"".join(parts), head.decode()


@dataclass(frozen=True)
class ChainedLine:
    """One line split into its body (the bytes the hash covers) and its chain member."""

    body: bytes
    seq: int
    prev: str
    hash: str

    @classmethod
    def parse(cls, raw: bytes) -> ChainedLine | None:
        """``None`` when ``raw`` (without its newline) carries no well-formed chain member."""
        match = _SUFFIX.search(raw)
        if match is None or match.start() < 2:
            return None
        return cls(raw[: match.start()] + b"}", int(match.group(1)),
                   match.group(2).decode(), match.group(3).decode())

    @property
    def intact(self) -> bool:
        """Whether the body still hashes to the recorded value (with the recorded ``prev``)."""
        return link_hash(self.prev, self.seq, self.body) == self.hash

    def document(self) -> dict[str, Any] | None:
        """The body as a JSON object, or ``None``."""
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------- signing


class CheckpointSigner(Protocol):
    """Signs checkpoints: auth wires its JWT CA key (``limen.auth.audit_signer``)."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class KeySigner:
    """A :class:`CheckpointSigner` over an Ed25519 (``EdDSA``) or P-256 (``ES256``) key."""

    def __init__(self, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
                 kid: str) -> None:
        self._key = key
        self._kid = kid
        self._alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> str:
        return self._alg

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def checkpoint_body(claims: Mapping[str, Any], signer: CheckpointSigner | None) -> bytes:
    """The JSON body of a checkpoint line (signed when ``signer`` is given)."""
    doc: dict[str, Any] = {CHECKPOINT_KEY: dict(claims)}
    if signer is not None:
        doc.update(kid=signer.kid, alg=signer.alg,
                   sig=_b64(signer.sign(_SIGNING_PREFIX + _canonical(dict(claims)))))
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def check_signature(doc: Mapping[str, Any], keys: Mapping[str, PublicKey]) -> str | None:
    """``None`` when the checkpoint ``doc`` is signed by one of ``keys`` (by ``kid``);
    otherwise why not: ``unsigned``, ``unknown key <kid>`` or ``bad signature``."""
    kid, alg, sig = doc.get("kid"), doc.get("alg"), doc.get("sig")
    if kid is None and sig is None:
        return "unsigned"
    if not isinstance(kid, str) or not isinstance(sig, str):
        return "bad signature"
    key = keys.get(kid)
    if key is None:
        return f"unknown key {kid}"
    try:
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        data = _SIGNING_PREFIX + _canonical(doc[CHECKPOINT_KEY])
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                return "bad signature"
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        else:
            return "bad signature"
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return "bad signature"
    return None


# ---------------------------------------------------------------------- the writer's view


@dataclass(frozen=True)
class Tail:
    """Where a file's chain stands, as a writer reopening it needs to know."""

    seq: int
    hash: str
    checkpoint: str | None
    """The reason of the last line when it is a checkpoint, else ``None``."""
    torn: bytes | None = None
    """The last line when it carries no chain (a torn write): a marker must follow it."""
    needs_newline: bool = False
    """The file does not end in a newline: the next write must start with one."""


def read_tail(fd: int, file_name: str) -> Tail:
    """The chain head of the open file ``fd`` (read backwards from its end)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return Tail(0, seed_for(file_name), None)
    needs_newline = os.pread(fd, 1, size - 1) != b"\n"
    torn: bytes | None = None
    for raw in _lines_backward(fd, size, needs_newline):
        line = ChainedLine.parse(raw)
        if line is None:
            if torn is None:
                torn = raw
            continue
        doc = line.document() if torn is None else None
        reason = None
        if doc is not None and isinstance(doc.get(CHECKPOINT_KEY), dict):
            reason = str(doc[CHECKPOINT_KEY].get("reason"))
        return Tail(line.seq, line.hash, reason, torn, needs_newline)
    return Tail(0, seed_for(file_name), None, torn, needs_newline)


def _lines_backward(fd: int, size: int, needs_newline: bool) -> Iterator[bytes]:
    """The file's lines, last first (without newlines), up to the scan limit."""
    pos = size if needs_newline else size - 1  # skip the final newline
    pending = b""
    floor = max(0, size - _TAIL_SCAN_LIMIT)
    while pos > floor:
        start = max(floor, pos - _TAIL_CHUNK)
        parts = (os.pread(fd, pos - start, start) + pending).split(b"\n")
        pos = start
        pending = parts[0]
        yield from reversed(parts[1:])
    if pos == 0:
        yield pending
