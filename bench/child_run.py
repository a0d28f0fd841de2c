"""A bench's child process, measured: its output, wall seconds, CPU seconds and peak resident memory.

The benches that compare stages or engines run each one in its own process (``bench/mine_scale.py``,
``bench/fsdp_memory.py``), so that each one's peak memory is its own; ``os.wait4`` reports the child's
resource use together with that of its waited-for descendants (torchrun's workers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ChildRun:
    output: str  # stdout and stderr, interleaved
    wall_s: float
    cpu_s: float  # user + system, all threads and waited-for descendants
    peak_rss_mb: float  # the largest single process among them


def run_child(command: list[str], what: str, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``command`` in the repository with ``env`` added to this environment (the repository and SentEval
    on PYTHONPATH unless ``env`` sets it); exit naming ``what`` and the output's tail if it fails."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "SentEval")]), **(env or {})}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{what} failed:\n{output[-3000:]}")
    return ChildRun(output, round(wall, 1), round(usage.ru_utime + usage.ru_stime, 1),
                    round(usage.ru_maxrss / 1024, 1))


def free_port() -> int:
    """A TCP port free on this host now (torchrun's ``--master_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
