"""Shared test helpers, imported as ``from helpers import ...``: where the offline data and models live,
tiny random models built from configs, tiny SentEval data trees.

Missing shared data fails the run when the environment variable ``CI`` is set (``.ci/run`` sets it), so
CI can never pass by skipping; elsewhere the tests that need it skip with the path and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from senteval.trec import COARSE_CLASSES

# The offline data and tokenizers beside the repository (override with $SIMCSE_SHARED).
SHARED = Path(os.environ.get("SIMCSE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REPO = Path(__file__).resolve().parents[1]


def missing_data(what: str) -> None:
    """Fail (``CI`` set) or skip (otherwise) a test whose shared data ``what`` is absent."""
    message = f"{what} not found (set SIMCSE_SHARED to the directory holding data/ and models/; now {SHARED})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so missing data fails the run instead of skipping", pytrace=False)
    pytest.skip(message)


def require_module(name: str):
    """``import name`` for a test that needs an optional package (a dev dependency), else the same rule as
    missing data: fail under CI (set by .ci/run), skip elsewhere."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        missing_data(f"the package {name!r} (pip install -r requirements-dev.txt)")


def require_shared(path: Path, what: str) -> Path:
    """``path`` (a file or directory of the shared data) when it exists, else :func:`missing_data`."""
    if not path.exists():
        missing_data(f"{what} at {path}")
    return path


def tokenizer_path(name: str) -> Path:
    """Directory of a real tokenizer (bert-base-uncased, roberta-base, gpt2)."""
    return require_shared(SHARED / "models" / "tokenizers" / name, f"tokenizer {name}")


# Every backbone family the tests cover: model type -> (the real tokenizer in ../shared it runs with, the
# tiny config's arguments beside vocab_size / pad_token_id). 2 layers, 32 wide (GPT-2 style: n_embd).
_LAYERS = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
_DECODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 128}
FAMILIES = {
    "bert": ("bert-base-uncased", {"hidden_size": 32, "max_position_embeddings": 128, **_LAYERS}),
    "roberta": ("roberta-base", {"hidden_size": 32, "max_position_embeddings": 130, **_LAYERS}),
    "gpt2": ("gpt2", {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 128}),
    "mpnet": ("bert-base-uncased", {"hidden_size": 32, "max_position_embeddings": 130, **_LAYERS}),
    "xlm-roberta": ("roberta-base", {"hidden_size": 32, "max_position_embeddings": 130, **_LAYERS}),
    "modernbert": ("bert-base-uncased", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                         "intermediate_size": 48, "max_position_embeddings": 128,
                                         "global_attn_every_n_layers": 1}),
    "deberta-v2": ("bert-base-uncased", {"hidden_size": 32, "max_position_embeddings": 128, **_LAYERS}),
    "distilbert": ("bert-base-uncased", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37,
                                         "max_position_embeddings": 128}),
    "electra": ("bert-base-uncased", {"hidden_size": 32, "embedding_size": 32, "max_position_embeddings": 128,
                                      **_LAYERS}),
    "qwen2": ("gpt2", _DECODER),
    "llama": ("gpt2", _DECODER),
    "mistral": ("gpt2", _DECODER),
}
TOKENIZER_OF = {model_type: tokenizer for model_type, (tokenizer, _) in FAMILIES.items()}


def save_tiny_model(directory: Path, model_type: str, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random backbone of the given family (:data:`FAMILIES`) with the real tokenizer,
    vocabulary size set to match, saved as a Hugging Face directory."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer_name, arguments = FAMILIES[model_type]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path(tokenizer_name))
    special = {"pad_token_id": tokenizer.pad_token_id} if tokenizer.pad_token_id is not None else {}
    if tokenizer_name == "gpt2":
        special = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **special, **arguments)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_sts_tree(root: Path, n_pairs: int = 6) -> Path:
    """A tiny STS12-16 + STS-B + SICK data tree of keyword sentences ('anchor' / 'level k')."""
    def write(path: Path, lines: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    from senteval.sts import STS12Eval, STS13Eval, STS14Eval, STS15Eval, STS16Eval

    sts = root / "downstream" / "STS"
    for task in (STS12Eval, STS13Eval, STS14Eval, STS15Eval, STS16Eval):
        for subset in task.subset_names:
            write(sts / task.folder / f"STS.input.{subset}.txt",
                  [f"a man plays {i}\tthe level {i}" for i in range(n_pairs)])
            write(sts / task.folder / f"STS.gs.{subset}.txt", [f"{(i * 7) % 5}.0" for i in range(n_pairs)])
    for split in ("train", "dev", "test"):
        write(sts / "STSBenchmark" / f"sts-{split}.csv",
              [f"g\tx\ty\t{i:04d}\t{i % 6}.0\ta dog runs {i}\ta cat sleeps {i}" for i in range(n_pairs)])
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        write(root / "downstream" / "SICK" / name,
              [header] + [f"{i}\ta bird sings {i}\ta fish swims\t{1 + i % 4}.5\tNEUTRAL" for i in range(n_pairs)])
    return root


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_transfer_tree(root: Path) -> None:
    """A tiny downstream/ tree for every transfer task; classes are told apart by their words."""
    rs = np.random.RandomState(0)
    filler = ["the", "a", "it", "was", "this", "and", "of", "film", "movie", "thing"]

    def sentence(word: str) -> str:
        return " ".join([word, *rs.choice(filler, size=rs.randint(1, 4))]) + " ."

    def lines(word: str, n: int) -> bytes:
        return "".join(sentence(word) + "\n" for _ in range(n)).encode()

    d = root / "downstream"
    for folder, names in {
        "MR": ("rt-polarity.pos", "rt-polarity.neg"),
        "CR": ("custrev.pos", "custrev.neg"),
        "SUBJ": ("subj.objective", "subj.subjective"),
        "MPQA": ("mpqa.pos", "mpqa.neg"),
    }.items():
        write_bytes(d / folder / names[0], lines("wonderful", 30))
        write_bytes(d / folder / names[1], lines("dreadful", 30))
    for split, n in (("train", 40), ("dev", 16), ("test", 16)):
        rows = [f"{sentence('wonderful')} \t1\n{sentence('dreadful')} \t0\n" for _ in range(n // 2)]
        write_bytes(d / "SST" / "binary" / f"sentiment-{split}", "".join(rows).encode())
    cue = {c: w for c, w in zip(COARSE_CLASSES, ["abbreviation", "why", "animal", "who", "where", "howmany"])}
    for name, n in (("train_5500.label", 12), ("TREC_10.label", 4)):
        rows = [f"{c}:x {sentence(cue[c])}\n" for c in COARSE_CLASSES for _ in range(n)]
        write_bytes(d / "TREC" / name, "".join(rows).encode("latin-1"))
    for name, n in (("msr_paraphrase_train.txt", 30), ("msr_paraphrase_test.txt", 12)):
        rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"]
        for i in range(n):
            same = sentence(["cat", "dog", "sun", "sea"][i % 4])
            rows.append(f"1\t{i}\t{i}\t{same}\t{same}\n")
            rows.append(f"0\t{i}\t{i}\t{sentence('stocks')}\t{sentence('weather')}\n")
        write_bytes(d / "MRPC" / name, b"\xef\xbb\xbf" + "".join(rows).encode())


class ScriptedEvaluation:
    """A dev evaluation for ``train_model(evaluator=...)``: STS scores given in advance, one per call
    (then the last one again when ``repeat_last``, else an error when they run out)."""

    def __init__(self, values, repeat_last: bool = True):
        self.values, self.repeat_last, self.calls = list(values), repeat_last, 0

    def __call__(self, model) -> dict[str, float]:
        if self.calls >= len(self.values) and not self.repeat_last:
            raise AssertionError(f"evaluation {self.calls + 1} was not scripted")
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"stsb_spearman": value, "sickr_spearman": value, "avg_sts": value}


def train_with(argv: list[str], evaluator) -> dict:
    """train.py's path (parse the flags, train) with ``evaluator`` in place of the flags' dev evaluation."""
    from simcse.training.arguments import parse_train_args
    from simcse.training.run import train_model

    model_args, data_args, training_args, _ = parse_train_args(argv)
    return train_model(model_args, data_args, training_args, evaluator=evaluator)


def slow_except_first(rows, ids=None) -> list:
    """A parametrised table for the two tiers: the first row runs in the fast tier (``pytest``), every
    other row only in the slow tier (``pytest -m slow``, which CI runs too)."""
    rows = list(rows)
    ids = list(ids) if ids is not None else [None] * len(rows)
    return [pytest.param(*(row if isinstance(row, tuple) else (row,)), id=i, marks=() if n == 0 else pytest.mark.slow)
            for n, (row, i) in enumerate(zip(rows, ids))]


def write_beir_folder(root: Path, corpus, queries, qrels, split: str = "test",
                      header: str = "query-id\tcorpus-id\tscore", ignore_identical_ids: bool | None = None) -> Path:
    """A BEIR-layout folder for tests. ``corpus`` / ``queries``: ``{id: text}``, ``{id: (title, text)}``, or a
    list of rows (a dict is one JSON line, a str a raw line, for malformed files); ``qrels``: ``{query: {doc:
    relevance}}``, (query, doc, relevance) tuples, or raw row strings. ``ignore_identical_ids`` not None
    writes a dataset.json declaring it."""
    import json

    def rows(items) -> list:
        if not isinstance(items, dict):
            return list(items)
        return [{"_id": key, "title": value[0], "text": value[1]} if isinstance(value, tuple)
                else {"_id": key, "text": value} for key, value in items.items()]

    def lines(items) -> str:
        return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in items)

    if isinstance(qrels, dict):
        qrels = [(q, d, r) for q, judged in qrels.items() for d, r in judged.items()]
    qrels = [row if isinstance(row, str) else "\t".join(map(str, row)) for row in qrels]
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(lines(rows(corpus)), encoding="utf-8")
    (root / "queries.jsonl").write_text(lines(rows(queries)), encoding="utf-8")
    (root / "qrels" / f"{split}.tsv").write_text(lines([header, *qrels]), encoding="utf-8")
    if ignore_identical_ids is not None:
        (root / "dataset.json").write_text(json.dumps({"ignore_identical_ids": ignore_identical_ids}) + "\n",
                                           encoding="utf-8")
    return root


def load_bench(name: str):
    """Import ``bench/<name>.py`` as module ``name`` (bench/ on sys.path, as when the script runs), for the
    tests of the bench scripts."""
    import importlib.util
    import sys

    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
