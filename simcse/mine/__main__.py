"""``python -m simcse.mine``: see :mod:`simcse.mine.run`."""

from simcse.cli import run_cli
from simcse.mine.run import main

raise SystemExit(run_cli(main, prog="python -m simcse.mine"))
