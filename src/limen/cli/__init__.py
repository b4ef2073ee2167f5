"""Command lines: ``limen`` (daemon and operator), ``lmctl`` (admin), ``lmsh`` (user client).

Each entry point is a click group; ``limen.cli.common`` maps Limen's typed errors to one
sentence on stderr and DESIGN.md's exit codes (0 ok, 1 denied/invalid, 2 usage, 3 connection).
"""
