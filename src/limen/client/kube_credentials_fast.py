"""What ``lmsh kube credentials --cluster NAME|--all [--proxy P] [--leaf-cluster LEAF]``
prints, without click or cryptography: kubectl runs its exec plugin on every invocation, so
the plugin's start-up is paid by every fresh ``kubectl`` (bench/RESULTS.md, Kubernetes).

:func:`serve` prints the saved kube certificate's ExecCredential when
:func:`saved_credential` finds it usable exactly as ``limen.client.kube_access.credentials``
would (``_usable``): the certificate file of that kube cluster (``--all``: the one naming no
kube cluster), a Limen user certificate (identity extension read from the DER by
``limen.client.fast_der``) of the profile's user and cluster, scoped to ``kube``, naming
that kube cluster (``--all``: none) and that leaf cluster (default: none), living more than
:data:`RENEW_MARGIN_SECONDS` more, whose public key is the login key's (an unencrypted
OpenSSH Ed25519 key, given to kubectl as PKCS#8 PEM). The output is byte for byte the full
command's for the same files (:func:`exec_credential_doc` builds both).

Anything else (no profile or a block-YAML one, no saved certificate, one expiring, for
another kube cluster or leaf, from before the last ``lmsh login``, another key type, any
doubt while reading) goes, before any output, to the full path (:func:`handover`:
``limen.client.kube_access.print_credentials`` in this process, the site directories added
first), which fetches a fresh certificate from the proxy or reports the error as
``lmsh kube credentials`` does. Only the profile's own files are read.

Called by ``limen.client.kube_credentials_main`` (the exec command ``lmsh kube login``
writes, :func:`exec_command`); ``limen.client.kube_access`` shares :func:`exec_credential_doc`
and :data:`RENEW_MARGIN_SECONDS`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from limen.client.fast_profile import NotServed, limen_home, profile_doc, proxy_dirname, read

__all__ = ["RENEW_MARGIN_SECONDS", "Parsed", "exec_command", "exec_credential_doc",
           "handover", "parse_args", "saved_credential", "serve"]

RENEW_MARGIN_SECONDS = 60
"""A saved kube certificate living less than this is renewed (both paths)."""
EXEC_API_VERSION = "client.authentication.k8s.io/v1"


Parsed = tuple[str | None, str | None, str]
"""``(name, proxy, leaf)``: the options of ``kube credentials`` (``name`` None: ``--all``);
a plain tuple (``typing.NamedTuple`` would cost the plugin the import of ``typing``)."""


def parse_args(args: Sequence[str]) -> Parsed | None:
    """The options of ``--cluster NAME|--all [--proxy P] [--leaf-cluster LEAF]`` (each at
    most once, ``--opt=value`` too), or None for anything else."""
    options: dict[str, str] = {}
    any_cluster = False
    items = list(args)
    while items:
        item = items.pop(0)
        if item == "--all" and not any_cluster:
            any_cluster = True
            continue
        option, equals, value = item.partition("=")
        if option not in ("--cluster", "--proxy", "--leaf-cluster") or option in options:
            return None
        if not equals:
            if not items:
                return None
            value = items.pop(0)
        if not value or value.startswith("-"):
            return None
        options[option] = value
    name = options.get("--cluster")
    if bool(name) == any_cluster:
        return None
    return name, options.get("--proxy"), options.get("--leaf-cluster", "")


def exec_command(lmsh: str) -> tuple[str, list[str]]:
    """The exec plugin's command and the arguments before ``kube credentials``: this
    interpreter (its absolute path, not resolved: a virtual environment's ``python`` finds
    its site directories for the full path) running ``kube_credentials_main.py`` with
    ``-I -S``, or ``lmsh`` (its path) where the interpreter is unknown."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kube_credentials_main.py")
    if not sys.executable or not os.path.isfile(script):
        return lmsh, []
    return os.path.abspath(sys.executable), ["-I", "-S", script]


def exec_credential_doc(cert_pem: str, key_pem: str, expires: str) -> dict[str, object]:
    """The ``client.authentication.k8s.io/v1`` ExecCredential kubectl reads (``expires``:
    ``YYYY-MM-DDTHH:MM:SSZ``)."""
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential",
            "status": {"clientCertificateData": cert_pem, "clientKeyData": key_pem,
                       "expirationTimestamp": expires}}


def serve(parsed: Parsed) -> int:
    """Print the ExecCredential: the saved one when usable, else :func:`handover`'s."""
    try:
        text = saved_credential(parsed, limen_home(), datetime.now(UTC))
    except NotServed:
        return handover(parsed)
    sys.stdout.write(text + "\n")
    return 0


def handover(parsed: Parsed) -> int:
    """``lmsh kube credentials`` in this process (a fresh certificate, or its error and exit
    status); started without ``site`` (``python -S``), the installation's site directories
    are added first."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()
    from limen.client.kube_access import print_credentials
    from limen.client.proxyssh_command import reported

    name, proxy, leaf = parsed
    return reported(print_credentials, proxy, name, leaf)


def _plain(name: str) -> bool:
    """A name used as a file name as it is (others: the full path checks them)."""
    return bool(name) and not name.startswith(".") and all(
        c.isalnum() or c in "-_.@" for c in name)


def _profile(home: str, proxy: str | None) -> tuple[str, str, str]:
    """``(proxy, user, cluster)`` of the profile (``ProfileStore.load``/``current``)."""
    _, doc = profile_doc(home, proxy)
    fields = doc.get("proxy"), doc.get("user"), doc.get("cluster")
    profile_proxy, user, cluster = (value if isinstance(value, str) else "" for value in fields)
    if not all(_plain(value.replace(":", "_")) for value in (profile_proxy, user, cluster)):
        raise NotServed
    return profile_proxy, user, cluster


def saved_credential(parsed: Parsed, home: str, now: datetime) -> str:
    """The ExecCredential JSON of the saved certificate for ``parsed`` under ``home`` at
    ``now`` (see the module); :class:`NotServed` when it cannot be served from the files."""
    from limen.client.fast_der import Malformed, Unsupported

    try:
        return _saved(parsed, home, now)
    except (Malformed, Unsupported, ValueError, KeyError, TypeError, IndexError):
        raise NotServed from None


def _saved(parsed: Parsed, home: str, now: datetime) -> str:
    name, proxy, leaf = parsed
    proxy, user, cluster = _profile(home, proxy)
    leaf = leaf if leaf != cluster else ""
    if (name is not None and not _plain(name)) or (leaf and not _plain(leaf)) \
            or (name is None and leaf):
        raise NotServed  # the full path explains
    keys = os.path.join(home, "keys", proxy_dirname(proxy))
    cert_file = os.path.join(keys, f"{user}-kube", leaf or cluster, f"{name}.crt") \
        if name is not None else os.path.join(keys, f"{user}-kube-any", f"{cluster}.crt")
    pem = read(cert_file).decode()
    der = _pem_der(pem)
    _check_identity(der, user, cluster, name, leaf)
    spki, not_after = _spki_not_after(der)
    expires = datetime(int(not_after[:4]), int(not_after[5:7]), int(not_after[8:10]),
                       int(not_after[11:13]), int(not_after[14:16]), int(not_after[17:19]),
                       tzinfo=UTC)
    if expires - timedelta(seconds=RENEW_MARGIN_SECONDS) <= now:
        raise NotServed  # expiring: a fresh one
    from limen.client.fast_der import ED25519_SPKI_PREFIX, ed25519_openssh, ed25519_pkcs8_pem

    key = read(os.path.join(keys, user))
    if spki != ED25519_SPKI_PREFIX + ed25519_openssh(key)[1]:
        raise NotServed  # saved before the last lmsh login, which made a new key
    return json.dumps(exec_credential_doc(pem, ed25519_pkcs8_pem(key).decode(), not_after))


def _pem_der(pem: str) -> bytes:
    """The DER of a file holding exactly one PEM certificate."""
    import base64

    head, tail = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    text = pem.strip()
    if not (text.startswith(head) and text.endswith(tail)) or text.count("-----") != 4:
        raise NotServed
    return base64.b64decode("".join(text[len(head):-len(tail)].split()), validate=True)


def _check_identity(der: bytes, user: str, cluster: str, name: str | None, leaf: str) -> None:
    """:class:`NotServed` unless the certificate's identity is the profile user's kube
    certificate for ``name`` (None: no kube cluster named) of ``leaf`` (empty: none)."""
    from limen.client.fast_der import identity_json

    doc = identity_json(der)
    if doc.get("v") != 1 or doc.get("user") != user or doc.get("cluster") != cluster \
            or "system_role" in doc or doc.get("usage") != ["kube"]:
        raise NotServed
    if doc.get("route_kube") != name or doc.get("route_cluster") != (leaf or None):
        raise NotServed


def _spki_not_after(der: bytes) -> tuple[bytes, str]:
    """The SubjectPublicKeyInfo DER and the notAfter (``YYYY-MM-DDTHH:MM:SSZ``) of a
    certificate."""
    from limen.client.fast_der import tbs_elements, tlv

    elements = tbs_elements(der)
    if elements[0][0] == 0xA0:  # [0] version
        elements = elements[1:]
    _serial, _alg, _issuer, validity, subject, spki = elements[:6]
    if validity[0] != 0x30 or spki[0] != 0x30:
        raise NotServed
    _tag, _start, after = tlv(der, validity[1])
    tag, start, end = tlv(der, after)
    if end != validity[2]:
        raise NotServed
    # the elements are contiguous: the key's element starts where the subject's ends
    return der[subject[2]:spki[2]], _time_text(tag, der[start:end].decode("ascii"))


def _time_text(tag: int, text: str) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of a DER UTCTime (tag 0x17) or GeneralizedTime (0x18)."""
    if tag == 0x17 and len(text) == 13:
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != 0x18 or len(text) != 15:
        raise NotServed
    if not text[:14].isdigit() or text[14] != "Z":
        raise NotServed
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}T{text[8:10]}:{text[10:12]}:{text[12:14]}Z"
