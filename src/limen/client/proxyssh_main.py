"""The script OpenSSH runs as ProxyCommand for Limen nodes (the line ``lmsh config`` writes)::

    <python> -I -S <this file> --proxy HOST:PORT --cluster NAME %r@%h:%p

``-I`` (isolated: no ``PYTHON*`` variables, no user site, not the current directory on the
path) and ``-S`` (no ``site``: no site-packages scan, no ``.pth`` files) start the interpreter
in about two thirds of its usual CPU time. This file then adds the directory holding the
``limen`` package it belongs to (site-packages, or ``src`` of an editable install) to the
path, after the standard library, and runs ``limen.client.proxyssh_command.serve``, whose
fast path needs the standard library only (the full command, reached when it cannot serve,
adds the site directories first). Any other command line is refused with exit status 2
(``lmsh proxy ssh`` serves every spelling). It ends with ``os._exit`` once its output is
flushed: the interpreter's teardown has nothing to release. Called by OpenSSH only
(``limen.client.proxyssh_command.helper_command`` names it).
"""

import os
import sys


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.append(root)  # after the standard library: site-packages may hold look-alikes
    from limen.client.proxyssh_command import parse_args, reported, serve

    parsed = parse_args(sys.argv[1:])
    if parsed is None:
        print("error: usage: proxyssh_main.py [--proxy HOST:PORT] [--cluster NAME] "
              "LOGIN@HOST:PORT", file=sys.stderr)
        return 2
    return reported(serve, parsed)


if __name__ == "__main__":
    status = main()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    # Nothing is left to release (the socket is closed, the relay writes with os.write): the
    # interpreter's teardown, module by module, would only cost OpenSSH's wait more CPU.
    os._exit(status)
