"""Helpers for the thin command-line scripts: one-line errors, no tracebacks for user mistakes."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable

from senteval.errors import SentEvalError
from simcse.distributed import process_group_teardown
from simcse.errors import SimCSEError, as_flags

USER_ERRORS = (SimCSEError, SentEvalError)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a single line (``prog: error: ...``) and exits with 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(main: Callable[[list[str] | None], object], argv: list[str] | None = None, prog: str = "simcse") -> int:
    """Run ``main(argv)``; a user error becomes ``prog: error: message`` on stderr and exit code 2 (the
    arguments it names written as flags, :func:`simcse.errors.as_flags`). A process
    group started by the run (torchrun) is destroyed on the way out, whatever the outcome."""
    try:
        with process_group_teardown():
            main(argv)
    except USER_ERRORS as err:
        message, code = f"{prog}: error: {as_flags(str(err))}", 2
    except KeyboardInterrupt:
        message, code = f"{prog}: interrupted", 130
    else:
        return 0
    # Free the failed run (its open progress bars print a last line when closed), so the message is last.
    gc.collect()
    print(message, file=sys.stderr)
    return code


def configure_training_logging(should_log: bool) -> None:
    """Logging of a training entry point (train.py, the demo, the multi-seed runner): INFO on the main
    process, warnings elsewhere, to stdout; transformers' own logger at warnings. Entry points call this;
    library modules never configure logging."""
    import logging

    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if should_log else logging.WARN, stream=sys.stdout)
    transformers.utils.logging.set_verbosity_warning()


def print_notices(notices: list[str], prog: str) -> None:
    """The notices of :func:`simcse.training.arguments.parse_train_args`, one ``<prog>: notice: ...`` line each."""
    for notice in notices:
        print(f"{prog}: notice: {notice}", file=sys.stderr)
