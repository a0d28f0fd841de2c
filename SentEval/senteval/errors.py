"""The one exception type the engine raises for bad input or missing data."""

from __future__ import annotations


class SentEvalError(Exception):
    """Bad user input (unknown task, bad parameter) or missing/malformed evaluation data.

    The message always names the offending value and how to fix it; command-line entry points print
    it as a single line without a traceback.
    """
