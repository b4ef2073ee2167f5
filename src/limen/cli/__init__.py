"""Command lines: ``limen`` (daemon and operator), ``lmctl`` (admin), ``lmsh`` (user client).

Each entry point is a click group; ``limen.cli.common`` maps Limen's typed errors to one
sentence on stderr and the exit codes of docs/architecture.md (0 ok, 1 denied/invalid,
2 usage, 3 connection).

Importing this package silences exactly one third-party warning, before any command imports
asyncssh: asyncssh touches cryptography's DSA classes at import, and cryptography 47 and later
warn that DSA is deprecated. Limen never uses DSA keys; every other warning stays visible.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning,
    module=r"asyncssh\.",
)
