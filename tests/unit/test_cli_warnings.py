"""The command lines print no third-party warning, and silence exactly one.

asyncssh touches cryptography's deprecated DSA classes at import; ``limen.cli`` silences that
warning alone. Each check runs a fresh interpreter with every warning an error (``-W error``), so
a new Deprecation/Resource warning raised while the CLIs import fails here by name.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CLIS = ("limen", "lmctl", "lmsh")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("cli", CLIS)
def test_cli_imports_and_help_raise_no_warning(cli: str) -> None:
    code = (
        f"import sys; from limen.cli.{cli} import main; sys.argv = [{cli!r}, '--help']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    sys.exit(exit.code)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Usage:" in result.stdout


def test_the_named_asyncssh_warning_is_the_only_one_silenced() -> None:
    code = (
        "import warnings, limen.cli\n"
        "from cryptography.utils import CryptographyDeprecationWarning as W\n"
        "warnings.warn_explicit('DSA is deprecated', W, 'x.py', 1, module='asyncssh.crypto.misc')\n"
        "for message, module in [('DSA is deprecated', 'limen.ca'),"
        " ('something else', 'asyncssh.crypto.misc')]:\n"
        "    try:\n"
        "        warnings.warn_explicit(message, W, 'x.py', 1, module=module)\n"
        "    except W:\n"
        "        print('raised', module)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["raised limen.ca", "raised asyncssh.crypto.misc"]
