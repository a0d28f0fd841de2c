"""The exception type for bad user input; entry points print its message as one line and exit 2."""

from __future__ import annotations


class SimCSEError(Exception):
    """Bad input: the message names the offending value and the fix."""
