"""The script kubectl runs as its exec credential plugin for Limen kube clusters (the command
``lmsh kube login`` writes into the kubeconfig)::

    <python> -I -S <this file> kube credentials --proxy P --cluster NAME [--leaf-cluster LEAF]
    <python> -I -S <this file> kube credentials --proxy P --all

``-I`` (isolated: no ``PYTHON*`` variables, no user site, not the current directory on the
path) and ``-S`` (no ``site``: no site-packages scan, no ``.pth`` files) start the interpreter
in about two thirds of its usual CPU time. This file then adds the directory holding the
``limen`` package it belongs to (site-packages, or ``src`` of an editable install) to the
path, after the standard library, and runs ``limen.client.kube_credentials_fast.serve``,
whose fast path (the saved certificate) needs the standard library only; the full path,
reached when it cannot serve, adds the site directories first. Any other command line is
refused with exit status 2, as click refuses a bad one (``lmsh kube credentials`` serves
every spelling). It ends with ``os._exit`` once its output is flushed: the interpreter's
teardown has nothing to release. Called by kubectl only
(``limen.client.kube_credentials_fast.exec_command`` names it).
"""

import os
import sys


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.append(root)  # after the standard library: site-packages may hold look-alikes
    from limen.client.kube_credentials_fast import parse_args, serve

    args = sys.argv[1:]
    parsed = parse_args(args[2:]) if args[:2] == ["kube", "credentials"] else None
    if parsed is None:
        print("error: usage: kube_credentials_main.py kube credentials --cluster NAME|--all "
              "[--proxy HOST:PORT] [--leaf-cluster LEAF]", file=sys.stderr)
        return 2
    return serve(parsed)


if __name__ == "__main__":
    status = main()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    # Nothing is left to release (the files read are closed; the full path's client session
    # is closed before it returns): the teardown would only cost kubectl's wait more CPU.
    os._exit(status)
