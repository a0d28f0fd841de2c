"""The exception type for bad user input; entry points print its message as one line and exit 2.

Library code names the *arguments* a user got wrong, never command-line flags: the same check is reached
from ``train_model(args)``, ``SimCSE(...)`` or a script, and only an entry point knows that its arguments
are flags. The convention: an argument name is written in single backticks (```temp` must be > 0``);
:func:`as_flags` (applied by :func:`simcse.cli.run_cli`, the wrapper of every entry point) turns each into
the flag of the same name (``--temp must be > 0``), since every entry point's flags are its dataclass
fields or argparse destinations, spelled alike. Shell commands quoted in a message keep their literal
flags (``pip install --no-deps ...``).
"""

from __future__ import annotations

import re

# A backticked Python identifier: an argument name (a command in backticks holds spaces, so never matches).
ARGUMENT_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class SimCSEError(Exception):
    """Bad input: the message names the offending value (arguments in backticks) and the fix."""


def as_flags(message: str) -> str:
    """``message`` as an entry point prints it: every backticked argument name becomes its ``--flag``."""
    return ARGUMENT_NAME.sub(r"--\1", message)
