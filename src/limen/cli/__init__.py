"""Command lines: ``limen`` (daemon and operator), ``lmctl`` (admin), ``lmsh`` (user client).

Each entry point is a click group; ``limen.cli.common`` maps Limen's typed errors to one
sentence on stderr and the exit codes of docs/architecture.md (0 ok, 1 denied/invalid,
2 usage, 3 connection).

Importing this package silences exactly one third-party warning, before any command imports
asyncssh: asyncssh touches cryptography's DSA classes at import, and cryptography 47 and later
warn that DSA is deprecated. Limen never uses DSA keys; every other warning stays visible.
"""

import warnings

# UserWarning, the base of cryptography's CryptographyDeprecationWarning: importing
# cryptography.utils for its name costs every command ~20 ms, OpenSSH's ProxyCommand
# (lmsh proxy ssh) included, which otherwise imports no cryptography at all.
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=UserWarning, module=r"asyncssh\.",
)
