"""The ``lmsh`` console script's entry point.

OpenSSH starts ``lmsh proxy ssh --proxy P LOGIN@HOST:PORT`` (the ``lmsh config`` block's
ProxyCommand) for every connection: that exact command line is served here without loading
click or any other command (``limen.client.proxyssh_command``). ``lmsh ssh [OPTIONS]
[LOGIN@]HOST [COMMAND]`` to a node of the profile's own cluster becomes ``ssh`` here too
(``limen.client.ssh_command``). Everything else, including any other spelling of ``proxy ssh``,
``lmsh ssh --cluster`` or a label selector, and ``--help``, goes to the click group of
``limen.cli.lmsh``.
Errors are reported as the click commands report them (``limen.cli.common.handle_errors``):
``error: <sentence>`` on stderr and the documented exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["main"]

T = TypeVar("T")


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["proxy", "ssh"]:
        from limen.client.proxyssh_command import parse_args

        parsed = parse_args(args[2:])
        if parsed is not None:
            sys.exit(_fast(_proxy_ssh, parsed))
    elif args[:1] == ["ssh"]:
        status = _fast(_exec_ssh, args[1:])  # success does not return: the process is ssh
        if status != _NOT_HERE:
            sys.exit(status)
    from limen.cli.lmsh import main as lmsh

    lmsh()


_NOT_HERE = -1


def _proxy_ssh(parsed: tuple[str | None, str | None, str]) -> int:
    from limen.client.proxyssh_command import relay_ssh

    return relay_ssh(*parsed)


def _exec_ssh(args: list[str]) -> int:
    from limen.client.ssh_command import exec_ssh

    exec_ssh(args)  # the process becomes ssh, or the click command must serve args
    return _NOT_HERE


def _fast(command: Callable[[T], int], arg: T) -> int:
    """``command(arg)``'s exit status, its errors reported as the click commands report them."""
    from limen.errors import LimenError, exit_code

    try:
        return command(arg)
    except LimenError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"error: {err.strerror or err} ({getattr(err, 'filename', '') or 'I/O'})",
              file=sys.stderr)
        return 1
