"""Helpers for the thin command-line scripts: one-line errors, no tracebacks for user mistakes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from senteval.errors import SentEvalError
from simcse.errors import SimCSEError

USER_ERRORS = (SimCSEError, SentEvalError)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a single line (``prog: error: ...``) and exits with 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None, prog: str = "simcse") -> int:
    """Run ``main(argv)``; a user error becomes ``prog: error: message`` on stderr and exit code 2."""
    try:
        main(argv)
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
