"""The ``lmsh`` console script's entry point.

OpenSSH starts ``lmsh proxy ssh --proxy P LOGIN@HOST:PORT`` (the ProxyCommand of ``lmsh ssh``
and of ``lmsh config`` blocks written before ``limen.client.proxyssh_main``) for every
connection: that exact command line is served here without loading click or any other command
(``limen.client.proxyssh_command.serve``). ``lmsh ssh [OPTIONS] [LOGIN@]HOST [COMMAND]`` to a
node of the profile's own cluster becomes ``ssh`` here too (``limen.client.ssh_command``).
Everything else, including any other spelling of ``proxy ssh``, ``lmsh ssh --cluster`` or a
label selector, and ``--help``, goes to the click group of ``limen.cli.lmsh``.
Errors are reported as the click commands report them (``limen.cli.common.handle_errors``):
``error: <sentence>`` on stderr and the documented exit code.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["proxy", "ssh"]:
        from limen.client.proxyssh_command import parse_args, reported, serve

        parsed = parse_args(args[2:])
        if parsed is not None:
            sys.exit(reported(serve, parsed))
    elif args[:1] == ["ssh"]:
        from limen.client.proxyssh_command import reported

        status = reported(_exec_ssh, args[1:])  # success does not return: the process is ssh
        if status != _NOT_HERE:
            sys.exit(status)
    from limen.cli.lmsh import main as lmsh

    lmsh()


_NOT_HERE = -1


def _exec_ssh(args: list[str]) -> int:
    from limen.client.ssh_command import exec_ssh

    exec_ssh(args)  # the process becomes ssh, or the click command must serve args
    return _NOT_HERE
