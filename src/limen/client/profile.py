"""The user's local state directory (``~/.limen`` or ``$LIMEN_HOME``), laid out as
docs/architecture.md says::

    current-profile                               name of the active profile
    profiles/<proxy>.yaml                         proxy address, user, cluster, expiry
    known_hosts                                   @cert-authority lines for trusted host CAs
    keys/<proxy>/<user>, <user>.pub               private key (Ed25519) and public key
    keys/<proxy>/<user>.crt                       X.509 client certificate
    keys/<proxy>/cas/<cluster>.pem                TLS CAs of the cluster(s)
    keys/<proxy>/<user>-ssh/<cluster>-cert.pub    SSH certificate per cluster

``<proxy>`` is the proxy's ``host:port`` with ``:`` replaced by ``_``. Directories are 0700,
files 0600, every write atomic. A profile is written as JSON, which is YAML too: OpenSSH's
ProxyCommand reads it for every connection, and ``json`` loads in a fraction of PyYAML's
import time (profiles written as block YAML by earlier versions are still read). Called by the
``lmsh`` commands and, for every ssh connection, by ``limen.client.proxyssh_command``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from limen.errors import BadParameter, NotFound
from limen.files import private_dir, write_private

__all__ = ["Profile", "ProfileStore", "limen_home", "proxy_dirname"]


def limen_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("LIMEN_HOME") or Path.home() / ".limen")


def proxy_dirname(proxy: str) -> str:
    return proxy.replace(":", "_").replace("/", "_")


class Profile(NamedTuple):
    """One login at one proxy (a named tuple, not a dataclass: ``dataclasses`` costs the
    ProxyCommand the import of ``inspect``)."""

    proxy: str
    user: str
    cluster: str
    expires: str
    """ISO-8601 UTC expiry of the certificates."""
    roles: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()
    ssh_proxy: str = ""
    """The proxy's SSH address (``host:port``) for ``ssh -J``."""
    leaf_clusters: tuple[str, ...] = ()

    @property
    def expires_at(self) -> datetime:
        return datetime.fromisoformat(self.expires).astimezone(UTC)

    def is_valid(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) < self.expires_at


class ProfileStore:
    """Reads and writes the state directory of one OS user."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or limen_home()

    # paths -------------------------------------------------------------------------------
    def key_dir(self, proxy: str) -> Path:
        return self.home / "keys" / proxy_dirname(proxy)

    def key_path(self, proxy: str, user: str) -> Path:
        return self.key_dir(proxy) / user

    def tls_cert_path(self, proxy: str, user: str) -> Path:
        return self.key_dir(proxy) / f"{user}.crt"

    def ssh_cert_path(self, proxy: str, user: str, cluster: str) -> Path:
        return self.key_dir(proxy) / f"{user}-ssh" / f"{cluster}-cert.pub"

    def ca_path(self, proxy: str, cluster: str) -> Path:
        return self.key_dir(proxy) / "cas" / f"{cluster}.pem"

    @property
    def known_hosts(self) -> Path:
        return self.home / "known_hosts"

    def profile_path(self, proxy: str) -> Path:
        return self.home / "profiles" / f"{proxy_dirname(proxy)}.yaml"

    # writes ------------------------------------------------------------------------------
    def save_login(
        self,
        profile: Profile,
        *,
        private_key: bytes,
        public_key: bytes,
        ssh_cert: bytes,
        tls_cert: bytes,
        tls_cas: Mapping[str, bytes],
        host_ca_lines: Sequence[str],
    ) -> None:
        """Write everything a login produced, then make the profile current."""
        private_dir(self.home / "keys")
        proxy, user = profile.proxy, profile.user
        write_private(self.key_path(proxy, user), private_key)
        write_private(self.key_path(proxy, user).with_name(f"{user}.pub"), public_key)
        write_private(self.tls_cert_path(proxy, user), tls_cert)
        write_private(self.ssh_cert_path(proxy, user, profile.cluster), ssh_cert)
        for cluster, pem in tls_cas.items():
            write_private(self.ca_path(proxy, cluster), pem)
        self._merge_known_hosts(host_ca_lines)
        write_private(self.profile_path(proxy), _dump(profile))
        write_private(self.home / "current-profile", proxy + "\n")

    def save_leaf_clusters(self, profile: Profile, leaves: Sequence[str],
                           host_ca_lines: Sequence[str]) -> Profile:
        """Remember the leaf clusters the user may reach (``lmsh clusters``) and trust their
        host CAs for ``*.<leaf>`` in known_hosts, in place of the lines those leaves had (a
        leaf's host CA rotation adds and later drops keys); returns the updated profile."""
        updated = profile._replace(leaf_clusters=tuple(leaves))
        self._merge_known_hosts(host_ca_lines, replacing=tuple(
            f"@cert-authority *.{leaf} " for leaf in leaves))
        write_private(self.profile_path(profile.proxy), _dump(updated))
        return updated

    def save_ca(self, proxy: str, cluster: str, pem: bytes) -> Path:
        """Remember a cluster's TLS CA (pinned at sign-up) for later verified connections."""
        return write_private(self.ca_path(proxy, cluster), pem)

    def _merge_known_hosts(self, lines: Sequence[str], replacing: tuple[str, ...] = ()) -> None:
        """Add ``lines`` to known_hosts; existing lines starting with one of ``replacing``
        go (unless ``lines`` has them)."""
        existing: list[str] = []
        if self.known_hosts.exists():
            existing = [line for line in
                        self.known_hosts.read_text(encoding="utf-8").splitlines()
                        if not (replacing and line.startswith(replacing))]
        merged = existing + [line for line in lines if line not in existing]
        write_private(self.known_hosts, "".join(f"{line}\n" for line in merged))

    # reads -------------------------------------------------------------------------------
    def current(self) -> Profile:
        marker = self.home / "current-profile"
        if not marker.exists():
            raise NotFound("not logged in: run lmsh login --proxy HOST:PORT --user NAME")
        return self.load(marker.read_text(encoding="utf-8").strip())

    def current_valid(self) -> Profile:
        """The current profile, whose certificates must still be valid (``BadParameter``:
        log in again)."""
        profile = self.current()
        if not profile.is_valid():
            raise BadParameter(f"your certificates expired at {profile.expires}: "
                               "run lmsh login")
        return profile

    def load(self, proxy: str) -> Profile:
        path = self.profile_path(proxy)
        if not path.exists():
            raise NotFound(f"no profile for proxy {proxy}: run lmsh login --proxy {proxy}")
        raw = _parse(path.read_text(encoding="utf-8"), path)
        for key in ("roles", "logins", "leaf_clusters"):
            raw[key] = tuple(raw.get(key) or ())
        return Profile(**raw)

    def trusted_cas(self, proxy: str) -> dict[str, bytes]:
        cas = self.key_dir(proxy) / "cas"
        if not cas.is_dir():
            return {}
        return {p.stem: p.read_bytes() for p in sorted(cas.glob("*.pem"))}

    # removal -----------------------------------------------------------------------------
    def logout(self, proxy: str) -> Profile | None:
        """Remove the profile and keys of ``proxy`` (CA pins stay for the next login)."""
        try:
            profile = self.load(proxy)
        except NotFound:
            profile = None
        key_dir = self.key_dir(proxy)
        if key_dir.exists():
            for child in key_dir.iterdir():
                if child.name == "cas":
                    continue
                if child.is_dir():
                    import shutil  # only here: the ProxyCommand never logs out

                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.profile_path(proxy).unlink(missing_ok=True)
        marker = self.home / "current-profile"
        if marker.exists() and marker.read_text(encoding="utf-8").strip() == proxy:
            marker.unlink()
        return profile


def _dump(profile: Profile) -> str:
    data: dict[str, Any] = profile._asdict()
    for key in ("roles", "logins", "leaf_clusters"):
        data[key] = list(data[key])
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _parse(text: str, path: Path) -> dict[str, Any]:
    """The profile's fields: JSON, or the block YAML earlier versions wrote."""
    try:
        raw = json.loads(text)
    except ValueError:
        import yaml  # a profile from before JSON

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise BadParameter(f"{path} is not a profile: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadParameter(f"{path} is not a profile: a mapping is expected")
    return raw
