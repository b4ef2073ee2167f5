"""The ``lmsh`` console script's entry point.

OpenSSH starts ``lmsh proxy ssh --proxy P LOGIN@HOST:PORT`` (the ``lmsh config`` block's
ProxyCommand) for every connection: that exact command line is served here without loading
click or any other command (``limen.client.proxyssh_command``). Everything else, including any
other spelling of ``proxy ssh`` and ``--help``, goes to the click group of ``limen.cli.lmsh``.
Errors are reported as the click commands report them (``limen.cli.common.handle_errors``):
``error: <sentence>`` on stderr and the documented exit code.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["proxy", "ssh"]:
        from limen.client.proxyssh_command import parse_args

        parsed = parse_args(args[2:])
        if parsed is not None:
            sys.exit(_proxy_ssh(*parsed))
    from limen.cli.lmsh import main as lmsh

    lmsh()


def _proxy_ssh(proxy: str | None, cluster: str | None, target: str) -> int:
    from limen.client.proxyssh_command import relay_ssh
    from limen.errors import LimenError, exit_code

    try:
        return relay_ssh(proxy, cluster, target)
    except LimenError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"error: {err.strerror or err} ({getattr(err, 'filename', '') or 'I/O'})",
              file=sys.stderr)
        return 1
