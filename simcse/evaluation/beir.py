"""The strict reader of a retrieval collection in the BEIR layout (Thakur et al., arXiv:2104.08663;
beir-cellar/beir, ``beir/datasets/data_loader.py``)::

    <folder>/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}   one JSON object a line
    <folder>/queries.jsonl       {"_id": "q1", "text": "..."}
    <folder>/qrels/<split>.tsv   query-id<TAB>corpus-id<TAB>score             a header line, then one judgement a line
    <folder>/dataset.json        {"ignore_identical_ids": true}                optional (ours, not BEIR's)

``title`` is optional; other fields (BEIR's ``metadata``) are ignored. A document's text is its title and
its text joined by one space, or whichever of the two is non-empty alone (BEIR's models join
``title + " " + text`` and strip the result, ``beir/retrieval/models/sentence_bert.py``; we keep each part
as written). A score is a graded
relevance, an integer >= 0, where 0 means judged non-relevant; a query is scored when at least one of its
judgements in the split is >= 1. Queries of ``queries.jsonl`` with none (most BEIR query files hold the
queries of every split) are counted in :attr:`BeirData.unjudged_queries` and not scored.

Unlike BEIR's loader, which skips what it cannot use, nothing is dropped silently: every defect is a
:class:`~simcse.errors.SimCSEError` of one line naming the file, the 1-based line number and the fix. The
lines, the JSON and the tab-separated rows are parsed by :mod:`senteval.tables`, the strict reader of every
user file; this module owns the BEIR rules. The rules: files are UTF-8 (a byte-order mark on line 1 is
allowed); lines end at ``\\n`` or ``\\r\\n`` (a lone ``\\r`` in a qrels row is an error); ``_id``, ``text`` and
``title`` are strings; ids are unique in their file; a document needs a non-blank title or text, a query a
non-blank text; blank lines may only close a file (trailing newlines left by an editor), never separate
records; the qrels header is exactly ``query-id, corpus-id, score``; every row has three tab-separated
columns, an integer score >= 0, a query of ``queries.jsonl``, a document of the corpus, and a (query,
document) pair judged once; and at least one judgement of the split is positive. Files are read line by
line, so memory holds the three dictionaries and one line.

``dataset.json`` declares how the folder must be evaluated; it is ours (BEIR passes the rule to its
``EvaluateRetrieval.evaluate`` and mteb keeps it on the task class). Its one key, ``ignore_identical_ids``
(a JSON bool), says that a document whose id equals the query's id is removed from that query's ranking,
as BEIR's ``ignore_identical_ids=True`` and mteb's ``AbsTaskRetrieval.ignore_identical_ids`` do: a folder
whose queries are also documents under the same ids (Quora, ArguAna, our proxy sets) needs it, or every
query finds itself first. Without the file the rule is off, as in mteb (whose attribute defaults to
False) and sentence-transformers (which has no such option); BEIR's ``evaluate`` defaults to True, so a
folder meant to be scored as BEIR scores it should declare ``true``. The value is
:attr:`BeirData.ignore_identical_ids`. The file is read strictly: UTF-8 JSON holding exactly one object
with exactly that key, once, and a bool value; anything else is a one-line :class:`SimCSEError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senteval.tables import TableError, file_lines, json_lines, tsv_rows
from simcse.errors import SimCSEError

QRELS_HEADER = ("query-id", "corpus-id", "score")
DATASET_FILE = "dataset.json"
DATASET_KEYS = ("ignore_identical_ids",)
_DATASET_FIX = 'write exactly {"ignore_identical_ids": true} or {"ignore_identical_ids": false}, or delete the file'


@dataclass(frozen=True)
class BeirData:
    """One split of a BEIR folder.

    corpus: document id -> text (title and text joined, see the module docstring), in file order.
    queries: query id -> text, every query of ``queries.jsonl`` in file order.
    qrels: query id -> {document id: graded relevance >= 0}, every row of ``qrels/<split>.tsv``.
    unjudged_queries: queries of ``queries.jsonl`` without a judgement >= 1 in this split (not scored).
    ignore_identical_ids: the folder's ``dataset.json`` declaration (False without the file): drop a
    document whose id equals the query id from that query's ranking (BEIR's ``ignore_identical_ids``).
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    unjudged_queries: int
    ignore_identical_ids: bool = False

    def scored_queries(self) -> list[str]:
        """Ids of the queries with at least one document of relevance >= 1, in ``queries.jsonl`` order."""
        return [qid for qid in self.queries if any(rel >= 1 for rel in self.qrels.get(qid, {}).values())]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its line ending) of each non-blank line of a UTF-8 file, read line
    by line (:func:`senteval.tables.file_lines`). A blank line followed by a non-blank one is an error;
    trailing blank lines are skipped."""
    last = 0  # the line of the last record
    try:
        for number, line in file_lines(path):
            if number > last + 1:
                raise SimCSEError(f"{path} line {last + 1}: blank line before the record on line {number}; remove "
                                  "it, blank lines may only end the file")
            last = number
            yield number, line
    except TableError as err:
        raise SimCSEError(f"{path} line {err.line}: not UTF-8: {err.message}") from None


def _parsed(path: Path, rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """``rows`` of :mod:`senteval.tables`; a :class:`~senteval.tables.TableError` becomes a SimCSEError naming
    ``path``."""
    try:
        yield from rows
    except TableError as err:
        raise SimCSEError(f"{path} line {err.line}: {err.message}") from None


def _string_field(path: Path, number: int, record: dict, key: str, required: bool) -> str | None:
    if key not in record:
        if required:
            raise SimCSEError(f"{path} line {number}: no {key!r} field; every line needs '_id' and 'text'")
        return None
    value = record[key]
    if not isinstance(value, str):
        raise SimCSEError(f"{path} line {number}: {key!r} must be a JSON string, got {type(value).__name__} "
                          f"{json.dumps(value)[:40]}; quote it (use \"\" for nothing)")
    return value


def _records(path: Path, what: str) -> Iterator[tuple[int, str, str | None, str]]:
    """(line number, _id, title or None, text) of each line of a BEIR jsonl file, ids unique."""
    first_line: dict[str, int] = {}
    for number, record in _parsed(path, json_lines(_lines(path))):
        if not isinstance(record, dict):
            raise SimCSEError(f"{path} line {number}: expected a JSON object with '_id' and 'text', got "
                              f"{type(record).__name__}")
        doc_id = _string_field(path, number, record, "_id", required=True)
        text = _string_field(path, number, record, "text", required=True)
        title = _string_field(path, number, record, "title", required=False) if what == "document" else None
        if doc_id in first_line:
            raise SimCSEError(f"{path} line {number}: duplicate _id {doc_id!r} (first on line {first_line[doc_id]}); "
                              f"give each {what} a unique id")
        first_line[doc_id] = number
        yield number, doc_id, title, text


def _read_corpus(path: Path) -> dict[str, str]:
    corpus: dict[str, str] = {}
    for number, doc_id, title, text in _records(path, "document"):
        parts = [part for part in (title, text) if part is not None and part.strip()]
        if not parts:
            raise SimCSEError(f"{path} line {number}: document {doc_id!r} has an empty title and text; give it "
                              "some text or remove it (and its qrels rows)")
        corpus[doc_id] = " ".join(parts)
    if not corpus:
        raise SimCSEError(f"{path} holds no documents; write one JSON object per line")
    return corpus


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, query_id, _, text in _records(path, "query"):
        if not text.strip():
            raise SimCSEError(f"{path} line {number}: query {query_id!r} has an empty text; give it a text or "
                              "remove it (and its qrels rows)")
        queries[query_id] = text
    if not queries:
        raise SimCSEError(f"{path} holds no queries; write one JSON object per line")
    return queries


def _read_qrels(path: Path, corpus: dict[str, str], queries: dict[str, str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    header_seen = False
    positive = 0
    for number, columns in _parsed(path, tsv_rows(_lines(path))):
        if not header_seen:
            if tuple(columns) != QRELS_HEADER:
                line = "\t".join(columns)
                raise SimCSEError(f"{path} line {number}: expected the header 'query-id<TAB>corpus-id<TAB>score', got "
                                  f"{line[:60]!r}; add that header line")
            header_seen = True
            continue
        if len(columns) != 3:
            raise SimCSEError(f"{path} line {number}: {len(columns)} tab-separated column(s), expected 3 "
                              "(query-id, corpus-id, score); separate them by one tab")
        query_id, doc_id, score = columns
        try:
            relevance = int(score)
        except ValueError:
            raise SimCSEError(f"{path} line {number}: score {score!r} is not an integer; write the graded relevance "
                              "as 0, 1, 2, ...") from None
        if relevance < 0:
            raise SimCSEError(f"{path} line {number}: score {relevance} is negative; use 0 for judged non-relevant "
                              "and 1 or more for relevant")
        if query_id not in queries:
            raise SimCSEError(f"{path} line {number}: query id {query_id!r} is not in queries.jsonl; add the query "
                              "or remove the row")
        if doc_id not in corpus:
            raise SimCSEError(f"{path} line {number}: document id {doc_id!r} is not in corpus.jsonl; add the "
                              "document or remove the row")
        pair = (query_id, doc_id)
        if pair in first_line:
            raise SimCSEError(f"{path} line {number}: query {query_id!r} and document {doc_id!r} are already judged "
                              f"on line {first_line[pair]}; keep one row per pair")
        first_line[pair] = number
        qrels.setdefault(query_id, {})[doc_id] = relevance
        positive += relevance >= 1
    if not header_seen:
        raise SimCSEError(f"{path} is empty; it needs the header 'query-id<TAB>corpus-id<TAB>score' and one row per "
                          "judgement")
    if not positive:
        raise SimCSEError(f"{path}: no row has a score >= 1 ({len(first_line)} judgement(s), all 0), so no query can "
                          "be scored; add the relevant documents or use another split")
    return qrels


def _unique_keys(path: Path, pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise SimCSEError(f"{path}: the key {repeated[0]!r} appears more than once; {_DATASET_FIX}")
    return dict(pairs)


def read_dataset_json(folder: str | os.PathLike) -> bool:
    """The ``ignore_identical_ids`` that ``<folder>/dataset.json`` declares; False when there is no such file.
    Strict (see the module docstring): any other content is a one-line :class:`SimCSEError` naming the file."""
    path = Path(folder) / DATASET_FILE
    fix = _DATASET_FIX
    if not path.exists():
        return False
    if not path.is_file():
        raise SimCSEError(f"{path} is not a file; {fix}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SimCSEError(f"{path}: not valid UTF-8 (byte at offset {err.start}); {fix}") from None
    try:
        value = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(path, pairs))
    except json.JSONDecodeError as err:
        raise SimCSEError(f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno}); {fix}") from None
    if not isinstance(value, dict):
        raise SimCSEError(f"{path}: expected a JSON object, got {type(value).__name__}; {fix}")
    unknown = sorted(key for key in value if key not in DATASET_KEYS)
    if unknown:
        raise SimCSEError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}, the only key is "
                          f"'ignore_identical_ids'; {fix}")
    if "ignore_identical_ids" not in value:
        raise SimCSEError(f"{path}: no 'ignore_identical_ids' key; {fix}")
    flag = value["ignore_identical_ids"]
    if not isinstance(flag, bool):
        raise SimCSEError(f"{path}: 'ignore_identical_ids' must be a JSON bool (true or false, unquoted), got "
                          f"{json.dumps(flag)[:40]}; {fix}")
    return flag


def read_beir_folder(folder: str | os.PathLike, split: str = "test") -> BeirData:
    """Read ``folder`` (corpus.jsonl, queries.jsonl, qrels/<split>.tsv and the optional dataset.json) strictly;
    see the module docstring for the rules. Raises a one-line :class:`SimCSEError` naming the file (and line)
    of the first defect."""
    root = Path(folder)
    if not root.is_dir():
        raise SimCSEError(f"BEIR folder {str(root)!r} does not exist or is not a folder; give a folder holding "
                          "corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise SimCSEError(f"{root / name} is missing; a BEIR folder holds corpus.jsonl, queries.jsonl and "
                              "qrels/<split>.tsv")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        found = (f"the splits there are: {', '.join(splits)}; pass one of them as split (DIR:NAME:SPLIT on the "
                 "command line)") if splits else \
            "there is no qrels/*.tsv at all; add the judgements"
        raise SimCSEError(f"{qrels_path} is missing (split {split!r}); {found}")
    ignore_identical_ids = read_dataset_json(root)
    corpus = _read_corpus(root / "corpus.jsonl")
    queries = _read_queries(root / "queries.jsonl")
    qrels = _read_qrels(qrels_path, corpus, queries)
    scored = sum(any(rel >= 1 for rel in qrels.get(qid, {}).values()) for qid in queries)
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, unjudged_queries=len(queries) - scored,
                    ignore_identical_ids=ignore_identical_ids)
