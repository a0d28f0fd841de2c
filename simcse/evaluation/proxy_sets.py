"""Proxy retrieval sets in BEIR layout, built from local STS-B, SICK-R or SNLI pairs.

    python -m simcse.evaluation.proxy_sets --source stsb --split test --output /tmp/proxy/stsb-test
    python -m simcse.evaluation.proxy_sets --source sickr --split dev --output /tmp/proxy/sickr-dev --min_score 4.5
    python -m simcse.evaluation.proxy_sets --source nli --split test --output /tmp/proxy/nli-test \\
        --input ../shared/data/train/nli_snli_devtest_for_simcse.csv

These are PROXIES, not BEIR datasets: small retrieval problems made from sentence-pair data that is
already on disk, so a retrieval evaluator can run offline. Their numbers are not comparable to published
BEIR results. Each output folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``, title empty),
``queries.jsonl`` (``{"_id", "text"}``), ``qrels/<split>.tsv`` (header ``query-id corpus-id score``,
tab-separated), ``dataset.json`` (``{"ignore_identical_ids": true}``, see below) and a ``README.txt`` that
says what the set was built from and how.

Rules:

* ``stsb`` (``STS/STSBenchmark/sts-{dev,test}.csv``) and ``sickr`` (``SICK/SICK_trial.txt`` for dev,
  ``SICK/SICK_test_annotated.txt`` for test), found with :func:`senteval.datapath.resolve_data_dir` like
  evaluation.py: every pair whose gold score is >= ``min_score`` (default 4.0) makes sentence 1 a query and
  sentence 2 a relevant document (relevance 1).
* ``nli`` (the SimCSE ``sent0,sent1,hard_neg`` csv, given with ``--input``): the premise is the query,
  the entailment its relevant document (relevance 1); the contradiction is a distractor. The one file is
  split deterministically: a row belongs to dev when the first 8 hex digits of the SHA-256 of its premise
  (UTF-8), read as an integer, are even, else to test; all rows of a premise fall in the same split.
* The corpus is every distinct sentence of the split (both sides of every pair, qualifying or not; for nli
  all three columns); identical texts (exact match after stripping outer whitespace) share one document.
* Ids are ``s<n>``, numbered in first-seen order of the sentences (row by row, left to right), so a rebuild
  writes byte-identical files. A query's id is the id of the corpus document with the same text (BEIR's
  convention when queries and corpus overlap, as in Quora and ArguAna): evaluate with identical ids
  ignored (BEIR's ``ignore_identical_ids=True``), or every query finds itself first. ``dataset.json``
  declares it, so :class:`~simcse.evaluation.retrieval.RetrievalEvaluator` and the mteb task of
  :func:`~simcse.evaluation.mteb_tasks.beir_task` apply it without being told
  (:func:`simcse.evaluation.beir.read_dataset_json`).
* A pair whose sentence 1 equals its sentence 2 gives no qrel (it is skipped and counted); a query is only
  written when it has at least one relevant document; a pair that repeats a (query, document) qrel is
  counted, not written twice.

Files are written atomically (:mod:`simcse.files`): corpus, queries, qrels, ``dataset.json``, then the
README last. A non-empty output folder is refused unless ``overwrite`` is set; overwriting replaces only
the files named above (``dataset.json`` included) and never deletes anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from senteval.tables import TableError, csv_rows, decode_utf8, text_lines, tsv_rows
from simcse.errors import SimCSEError
from simcse.files import atomic_write_text

__all__ = ["SOURCES", "SPLITS", "build_proxy_set", "main", "nli_split_of"]

SOURCES = ("stsb", "sickr", "nli")
SPLITS = ("dev", "test")
SICK_FILES = {"dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
NLI_COLUMNS = ("sent0", "sent1", "hard_neg")
SOURCE_NAMES = {"stsb": "STS Benchmark", "sickr": "SICK-R", "nli": "SNLI (SimCSE dev/test csv)"}
# Every proxy set shares ids between queries and documents: the folder declares the evaluation rule.
DATASET_JSON = {"ignore_identical_ids": True}

# One row of a source: (line number, its sentences left to right, gold score; None for nli, where every row counts).
Row = tuple[int, tuple[str, ...], float | None]


def nli_split_of(premise: str) -> str:
    """``"dev"`` or ``"test"``: the split of an nli row, by the parity of its premise's SHA-256 prefix."""
    digest = hashlib.sha256(premise.encode("utf-8")).hexdigest()
    return "dev" if int(digest[:8], 16) % 2 == 0 else "test"


def _require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise SimCSEError(f"{what} {path} does not exist or is not a file; {fix}")
    return path


def _clean(text: str, path: Path, number: int, column: str) -> str:
    text = text.strip()
    if not text:
        raise SimCSEError(f"{path}, line {number}: {column} is empty")
    return text


def _score(field: str, path: Path, number: int) -> float:
    try:
        score = float(field)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise SimCSEError(f"{path}, line {number}: the score field holds {field!r}, not a number")
    return score


def _read_text(path: Path) -> str:
    try:
        return decode_utf8(path.read_bytes())
    except TableError as err:
        raise SimCSEError(f"{path} is not UTF-8: line {err.line}, {err.message}") from None


def read_scored_pairs(path: Path, columns: tuple[int, int, int], header: bool) -> list[Row]:
    """(line number, (sentence 1, sentence 2), score) of each non-empty line of a tab-separated file.

    ``columns`` are the indices of sentence 1, sentence 2 and the score; ``header`` skips the first line.
    Fields are split on tabs only (the sentences hold quote characters) by :func:`senteval.tables.tsv_rows`;
    a short line, an empty sentence or a score that is not a finite number is a :class:`SimCSEError` naming
    the file and the line.
    """
    rows: list[Row] = []
    _require_file(path, "input file", "point `senteval_data` at the SentEval data directory")
    try:
        for number, fields in tsv_rows(text_lines(_read_text(path))):
            if header and number == 1:
                continue
            if len(fields) <= max(columns):
                raise SimCSEError(f"{path}, line {number}: {len(fields)} tab-separated fields, expected at least "
                                  f"{max(columns) + 1}")
            first = _clean(fields[columns[0]], path, number, "sentence 1")
            second = _clean(fields[columns[1]], path, number, "sentence 2")
            rows.append((number, (first, second), _score(fields[columns[2]], path, number)))
    except TableError as err:
        raise SimCSEError(f"{path}, line {err.line}: {err.message}") from None
    return rows


def read_nli_triples(path: Path) -> list[Row]:
    """(line number, (premise, entailment, contradiction), None) of each row of a ``sent0,sent1,hard_neg`` csv,
    read strictly (:func:`senteval.tables.csv_rows`) as the training reader reads the same file."""
    rows: list[Row] = []
    _require_file(path, "`input`", "give the sent0,sent1,hard_neg csv")
    table = csv_rows(_read_text(path))
    try:
        number, header = next(table, (1, None))
        header = header if number == 1 else []  # the first line is blank
        if header is None or tuple(h.strip() for h in header[:3]) != NLI_COLUMNS:
            raise SimCSEError(f"{path}, line 1: the header is {header!r}, expected {','.join(NLI_COLUMNS)}")
        for number, fields in table:
            if len(fields) < 3:
                raise SimCSEError(f"{path}, line {number}: {len(fields)} fields, expected 3 "
                                  f"({','.join(NLI_COLUMNS)})")
            rows.append((number, tuple(_clean(fields[i], path, number, NLI_COLUMNS[i]) for i in range(3)), None))
    except TableError as err:
        raise SimCSEError(f"{path}, line {err.line}: {err.message}") from None
    return rows


def source_files(source: str, split: str, data_dir: str | os.PathLike | None,
                 input_path: str | os.PathLike | None) -> Path:
    """The file a proxy set of ``source``/``split`` is built from (SentEval data tree, or ``--input`` for nli)."""
    if source not in SOURCES:
        raise SimCSEError(f"`source` {source!r}: choose one of {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise SimCSEError(f"`split` {split!r}: choose one of {', '.join(SPLITS)}")
    if source == "nli":
        if input_path is None:
            raise SimCSEError("`source` nli needs `input`, the sent0,sent1,hard_neg csv "
                              "(e.g. ../shared/data/train/nli_snli_devtest_for_simcse.csv)")
        if data_dir is not None:
            raise SimCSEError("`senteval_data` applies to `source` stsb/sickr; nli reads `input`")
        return Path(input_path)
    if input_path is not None:
        raise SimCSEError(f"`input` applies to `source` nli; {source} is read from the SentEval data (`senteval_data`)")
    from senteval.datapath import resolve_data_dir
    from senteval.errors import SentEvalError

    try:
        downstream = Path(resolve_data_dir(data_dir)) / "downstream"
    except SentEvalError as err:
        raise SimCSEError(str(err)) from err
    if source == "stsb":
        return downstream / "STS" / "STSBenchmark" / f"sts-{split}.csv"
    return downstream / "SICK" / SICK_FILES[split]


class _Collection:
    """Distinct sentences with ``s<n>`` ids in first-seen order, queries and their qrels."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.qrels: dict[str, dict[str, int]] = {}
        self.counts = {"pairs_qualifying": 0, "self_pairs_skipped": 0, "duplicate_pairs": 0}

    def add(self, text: str) -> str:
        if text not in self.ids:
            self.ids[text] = f"s{len(self.ids) + 1}"
        return self.ids[text]

    def judge(self, query: str, document: str) -> None:
        self.counts["pairs_qualifying"] += 1
        if query == document:
            self.counts["self_pairs_skipped"] += 1
            return
        judged = self.qrels.setdefault(self.ids[query], {})
        if self.ids[document] in judged:
            self.counts["duplicate_pairs"] += 1
        judged[self.ids[document]] = 1


def _jsonl(records: Iterable[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _check_output(output: Path, split: str, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise SimCSEError(f"`output` {output} is a file; name a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not overwrite:
        raise SimCSEError(f"`output` {output} is not empty; pass `overwrite` to replace its proxy files, "
                          "or choose another folder")
    stale = sorted(p.name for p in (output / "qrels").glob("*.tsv") if p.name != f"{split}.tsv")
    if stale:
        raise SimCSEError(f"`output` {output} holds qrels/{', qrels/'.join(stale)} of another build, which the new "
                          "corpus would leave stale (nothing is deleted); remove it or choose another folder")


def _readme(source: str, split: str, path: Path, min_score: float, counts: dict) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if source == "nli":
        rule = ("premise (sent0) = query; entailment (sent1) = relevant document (relevance 1); contradiction\n"
                "(hard_neg) and every other sentence = distractor. Split: a row is dev when the first 8 hex digits\n"
                "of SHA-256(premise, UTF-8) are even as an integer, else test.")
    else:
        rule = (f"every pair with gold score >= {min_score:g}: sentence 1 = query, sentence 2 = relevant document\n"
                "(relevance 1); every other sentence of the split = distractor.")
    lines = [
        f"Proxy retrieval set: proxy built from {SOURCE_NAMES[source]} {split}, not a BEIR dataset.",
        "Its scores are not comparable to published BEIR results.",
        "",
        f"Source file: {path}",
        f"Source SHA-256: {digest}",
        "Built by: python -m simcse.evaluation.proxy_sets (simcse/evaluation/proxy_sets.py)",
        "",
        "Rule:",
        rule,
        "The corpus is every distinct sentence of the split (exact text after stripping outer whitespace).",
        "Ids are s<n> in first-seen order; a query's id is the id of the corpus document with the same text,",
        "so evaluate with identical ids ignored (BEIR ignore_identical_ids=True) or each query finds itself.",
        'dataset.json declares it ({"ignore_identical_ids": true}); simcse\'s RetrievalEvaluator and mteb task',
        "read it and drop a query's own document from its ranking.",
        "A pair whose two sentences are identical is skipped (self_pairs_skipped).",
        "",
        "Counts:",
        *(f"  {key}: {value}" for key, value in counts.items() if key not in ("source", "split")),
        "",
    ]
    return "\n".join(lines)


def build_proxy_set(source: str, split: str, output: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                    min_score: float = 4.0, *, input_path: str | os.PathLike | None = None,
                    overwrite: bool = False) -> dict:
    """Build the proxy retrieval set ``source``/``split`` into the folder ``output``; return its counts.

    ``data_dir`` is the SentEval data directory for stsb/sickr (``None``: as evaluation.py resolves it);
    ``input_path`` is the ``sent0,sent1,hard_neg`` csv for nli (required there). The rules are in the
    module docstring. Raises :class:`SimCSEError` on a missing or malformed input and on a non-empty
    ``output`` without ``overwrite``.
    """
    path = source_files(source, split, data_dir, input_path)
    min_score = float(min_score)
    if not math.isfinite(min_score):
        raise SimCSEError(f"`min_score` {min_score}: give a finite number")
    output = Path(output)
    _check_output(output, split, overwrite)
    if source == "nli":
        all_rows = read_nli_triples(path)
        rows = [row for row in all_rows if nli_split_of(row[1][0]) == split]
    elif source == "stsb":
        all_rows = rows = read_scored_pairs(path, (5, 6, 4), header=False)
    else:
        all_rows = rows = read_scored_pairs(path, (1, 2, 3), header=True)
    if not rows:
        raise SimCSEError(f"{path}: no rows for split {split}; nothing to build")

    collection = _Collection()
    for _, sentences, score in rows:
        for text in sentences:
            collection.add(text)
        if score is None or score >= min_score:
            collection.judge(sentences[0], sentences[1])
    texts = {doc_id: text for text, doc_id in collection.ids.items()}
    counts = {"source": source, "split": split, "rows_read": len(all_rows), "pairs": len(rows),
              **collection.counts, "queries": len(collection.qrels), "documents": len(texts),
              "qrels": sum(len(judged) for judged in collection.qrels.values())}

    atomic_write_text(output / "corpus.jsonl",
                      _jsonl({"_id": doc_id, "title": "", "text": text} for doc_id, text in texts.items()))
    atomic_write_text(output / "queries.jsonl",
                      _jsonl({"_id": query_id, "text": texts[query_id]} for query_id in collection.qrels))
    qrel_lines = [f"{q}\t{d}\t{score}\n" for q, judged in collection.qrels.items() for d, score in judged.items()]
    atomic_write_text(output / "qrels" / f"{split}.tsv", "query-id\tcorpus-id\tscore\n" + "".join(qrel_lines))
    atomic_write_text(output / "dataset.json", json.dumps(DATASET_JSON) + "\n")
    atomic_write_text(output / "README.txt", _readme(source, split, path, min_score, counts))
    return counts


def summary_line(counts: dict, output: str | os.PathLike) -> str:
    """The one line the entry point prints: says proxy, names the source and gives the counts."""
    return (f"proxy built from {SOURCE_NAMES[counts['source']]} {counts['split']}, not a BEIR dataset: "
            f"{counts['queries']} queries, {counts['documents']} documents, {counts['qrels']} qrels "
            f"({counts['self_pairs_skipped']} self pairs skipped) -> {output}")


def main(argv: list[str] | None = None) -> dict:
    """Parse the flags, build one proxy set and print its summary line; return the counts."""
    from simcse.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m simcse.evaluation.proxy_sets",
                                   description="Build a proxy retrieval set (BEIR layout, not a BEIR dataset) "
                                               "from STS-B, SICK-R or SNLI pairs on disk.",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--split", required=True, choices=SPLITS)
    parser.add_argument("--output", required=True, help="the folder to write (must be empty unless --overwrite)")
    parser.add_argument("--senteval_data", default=None,
                        help="SentEval data dir containing downstream/ (stsb/sickr; default as evaluation.py)")
    parser.add_argument("--input", default=None, help="the sent0,sent1,hard_neg csv (required for --source nli)")
    parser.add_argument("--min_score", type=float, default=None,
                        help="gold score a pair needs to count as relevant (stsb/sickr; 4.0 when not given)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the proxy files (dataset.json and README.txt included) in a non-empty "
                             "--output (nothing is deleted)")
    args = parser.parse_args(argv)
    if args.min_score is not None and args.source == "nli":
        raise SimCSEError("`min_score` applies to `source` stsb/sickr; nli pairs are entailments")
    counts = build_proxy_set(args.source, args.split, args.output, data_dir=args.senteval_data,
                             min_score=4.0 if args.min_score is None else args.min_score, input_path=args.input,
                             overwrite=args.overwrite)
    print(summary_line(counts, args.output))
    return counts


if __name__ == "__main__":
    from simcse.cli import run_cli

    raise SystemExit(run_cli(main, prog="python -m simcse.evaluation.proxy_sets"))
