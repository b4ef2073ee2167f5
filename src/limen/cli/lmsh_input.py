"""What ``lmsh`` asks the person at the keyboard: passwords (or one line of stdin for scripts)
and one-time codes. Called by the ``lmsh`` login and sign-up commands."""

from __future__ import annotations

import sys

import click

from limen.errors import BadParameter

__all__ = ["read_code", "read_password"]


def read_password(from_stdin: bool, prompt: str, confirm: bool = False) -> str:
    """The first line of stdin (``--password-stdin``), else a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise BadParameter("--password-stdin given but standard input is empty")
        return line.rstrip("\r\n")
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


def read_code(prompt: str, *, err: bool = False, on_eof: str) -> str:
    """A one-time code typed (or piped) by the user; ``on_eof`` is the error when there is
    none (stdin closed), so a script without a code fails with one clear line."""
    try:
        value: str = click.prompt(prompt, err=err)
    except click.Abort:
        click.echo(err=err)  # end the prompt's line: the error gets a line of its own
        raise BadParameter(on_eof) from None
    return value.strip()
