"""What ``lmsh proxy ssh [--proxy HOST:PORT] [--cluster NAME] LOGIN@HOST:PORT`` does, without
click: OpenSSH runs it as ProxyCommand for every connection, so its start-up CPU is paid on
every ``ssh`` (issue #20: at most 50 ms).

:func:`serve` is the per-connection path: it reads the profile's JSON and the key files with
``os`` and ``json``, opens the TLS route (``limen.client.proxyssh_tls`` with the context of
``limen.client.proxyssh_fast_tls``) and relays; it imports neither ``pathlib``, ``typing``,
PyYAML nor cryptography. Whatever it does not serve itself (no login, a block-YAML profile,
expired certificates, a bad target, a key or certificate only ``limen.ca`` reads, a proxy
without the TLS route) it hands, before any byte is relayed, to the full command
(:func:`handover`: ``limen.client.proxyssh_full.relay_ssh``), which reports every error
exactly as before or falls back to the SSH subsystem path. Errors are printed as the click
commands print them (:func:`reported`).

Called by ``limen.client.proxyssh_main`` (the script ``lmsh config`` writes as ProxyCommand,
:func:`helper_command`) and ``limen.cli.lmsh_entry`` (the ``lmsh proxy ssh`` spelling).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from limen.client.fast_profile import NotServed, limen_home, profile_doc, proxy_dirname, read
from limen.errors import LimenError, exit_code

__all__ = ["handover", "helper_command", "parse_args", "reported", "serve"]

Parsed = tuple[str | None, str | None, str]


def parse_args(args: Sequence[str]) -> Parsed | None:
    """``(proxy, cluster, target)`` of ``[--proxy P] [--cluster C] TARGET`` (``--opt=value``
    too), or None for anything else (click's command then parses and explains it)."""
    options: dict[str, str] = {}
    rest: list[str] = []
    items = list(args)
    while items:
        item = items.pop(0)
        name, equals, value = item.partition("=")
        if name in ("--proxy", "--cluster") and name not in options:
            if not equals:
                if not items:
                    return None
                value = items.pop(0)
            options[name] = value
        elif item.startswith("-"):
            return None
        else:
            rest.append(item)
    if len(rest) != 1:
        return None
    return options.get("--proxy"), options.get("--cluster"), rest[0]


def helper_command(lmsh: str) -> list[str]:
    """The ProxyCommand's program and options before ``--proxy``: this interpreter running
    ``limen.client.proxyssh_main`` with ``-I -S`` (its start-up is OpenSSH's per connection),
    or ``lmsh proxy ssh`` (``lmsh``: its path) where the interpreter is unknown."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxyssh_main.py")
    if not sys.executable or not os.path.isfile(script):
        return [lmsh, "proxy", "ssh"]
    return [sys.executable, "-I", "-S", script]


def reported(command: Callable[..., int], *args: object) -> int:
    """``command(*args)``'s exit status, its errors reported as the click commands report
    them (``limen.cli.common.handle_errors``): ``error: <sentence>`` and the exit code."""
    try:
        return command(*args)
    except LimenError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"error: {err.strerror or err} ({getattr(err, 'filename', '') or 'I/O'})",
              file=sys.stderr)
        return 1


def serve(parsed: Parsed) -> int:
    """The ProxyCommand's relay on its fast path, else :func:`handover` (nothing relayed yet);
    the exit status."""
    try:
        return _serve_fast(*parsed)
    except NotServed:
        return handover(parsed)


def handover(parsed: Parsed) -> int:
    """``limen.client.proxyssh_full.relay_ssh`` in this process; started without ``site``
    (``python -S``: the ProxyCommand script), the installation's site directories are added
    first."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()
    from limen.client.proxyssh_full import relay_ssh

    return relay_ssh(*parsed)


def _profile(home: str, proxy: str | None) -> dict[str, str]:
    """The profile's JSON fields the relay needs (``limen.client.profile``'s layout), valid
    now; :class:`~limen.client.fast_profile.NotServed` for anything else (the full command
    explains it)."""
    from datetime import UTC, datetime

    _, doc = profile_doc(home, proxy)
    fields: dict[str, str] = {}
    for key in ("proxy", "user", "cluster", "expires"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise NotServed
        fields[key] = value
    try:
        expired = datetime.now(UTC) >= datetime.fromisoformat(fields["expires"]).astimezone(UTC)
    except ValueError:
        raise NotServed from None
    if expired:
        raise NotServed  # the full command says so
    return fields


def _files(home: str, proxy: str, user: str, cluster: str) -> tuple[str, str, str, str]:
    """The login's X.509 certificate, private key, its cluster's TLS CA and SSH certificate
    (``ProfileStore``'s ``tls_cert_path``, ``key_path``, ``ca_path``, ``ssh_cert_path``)."""
    keys = os.path.join(home, "keys", proxy_dirname(proxy))
    return (os.path.join(keys, f"{user}.crt"), os.path.join(keys, user),
            os.path.join(keys, "cas", f"{cluster}.pem"),
            os.path.join(keys, f"{user}-ssh", f"{cluster}-cert.pub"))


def _serve_fast(proxy: str | None, cluster: str | None, target: str) -> int:
    home = limen_home()
    profile = _profile(home, proxy)
    login, _, host_port = target.rpartition("@")
    host, _, port = host_port.rpartition(":")
    web_host, _, web_port = profile["proxy"].rpartition(":")
    if not (login and host and port.isdigit() and web_host and web_port.isdigit()) \
            or web_host.startswith("["):
        raise NotServed  # the full command explains a bad target, parses [v6]:port
    cluster = cluster or profile["cluster"]
    tls_cert, key, ca, ssh_cert = _files(home, profile["proxy"], profile["user"],
                                         profile["cluster"])

    from limen.client.proxyssh_fast_tls import Unsupported, check_proxy_cert, fast_context
    from limen.client.proxyssh_tls import (
        RouteRefused,
        open_route,
        relay_stdio,
        stdin_fd,
        strip_cluster,
    )
    from limen.net.ssh_tls_wire import SSHRouteRequest

    request = SSHRouteRequest(login=login, host=strip_cluster(host, cluster), port=int(port),
                              cluster=cluster, ssh_cert=read(ssh_cert).decode().strip())
    in_fd = stdin_fd()
    try:
        context = fast_context(read(tls_cert), read(key), ca)
        opened = open_route(web_host, int(web_port), context, request,
                            check=lambda der: check_proxy_cert(der, profile["cluster"]))
    except (Unsupported, FileNotFoundError):
        raise NotServed from None
    except RouteRefused as err:
        print(f"lmsh: {err}", file=sys.stderr, flush=True)
        return 1
    if opened is None:
        raise NotServed  # a proxy without the TLS route
    relay_stdio(*opened, in_fd)
    return 0
