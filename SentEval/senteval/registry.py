"""Task registry: task name -> task class. Adding a task is one entry here."""

from __future__ import annotations

from pathlib import Path

from senteval.errors import SentEvalError
from senteval.sts import (
    SICKRelatednessEval,
    STS12Eval,
    STS13Eval,
    STS14Eval,
    STS15Eval,
    STS16Eval,
    STSBenchmarkEval,
)

TASKS: dict[str, type] = {
    "STS12": STS12Eval,
    "STS13": STS13Eval,
    "STS14": STS14Eval,
    "STS15": STS15Eval,
    "STS16": STS16Eval,
    "STSBenchmark": STSBenchmarkEval,
    "SICKRelatedness": SICKRelatednessEval,
}

STS_TASKS = ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]
TRANSFER_TASKS = ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]


def build_task(name: str, downstream: Path, seed: int = 1111):
    """Instantiate (and load the data of) the task registered under ``name``."""
    if name not in TASKS:
        raise SentEvalError(f"unknown SentEval task {name!r}; available tasks: {', '.join(TASKS)}")
    return TASKS[name](downstream, seed=seed)
