"""Task registry: task name -> task class. Adding a task is one entry here."""

from __future__ import annotations

from pathlib import Path

from senteval.binary import CREval, MPQAEval, MREval, SUBJEval
from senteval.errors import SentEvalError
from senteval.mrpc import MRPCEval
from senteval.sst import SSTEval
from senteval.sts import (
    SICKRelatednessEval,
    STS12Eval,
    STS13Eval,
    STS14Eval,
    STS15Eval,
    STS16Eval,
    STSBenchmarkEval,
)
from senteval.trec import TRECEval

TASKS: dict[str, type] = {
    "STS12": STS12Eval,
    "STS13": STS13Eval,
    "STS14": STS14Eval,
    "STS15": STS15Eval,
    "STS16": STS16Eval,
    "STSBenchmark": STSBenchmarkEval,
    "SICKRelatedness": SICKRelatednessEval,
    "MR": MREval,
    "CR": CREval,
    "SUBJ": SUBJEval,
    "MPQA": MPQAEval,
    "SST2": SSTEval,
    "TREC": TRECEval,
    "MRPC": MRPCEval,
}

STS_TASKS = ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]
TRANSFER_TASKS = ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]


def build_task(name: str, downstream: Path, seed: int = 1111):
    """Instantiate (and load the data of) the task registered under ``name``."""
    if name not in TASKS:
        raise SentEvalError(f"unknown SentEval task {name!r}; available tasks: {', '.join(TASKS)}")
    return TASKS[name](downstream, seed=seed)
