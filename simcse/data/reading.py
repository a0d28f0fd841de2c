"""Reading a training file into columns of text (the first step of :mod:`simcse.data`): the formats,
the column roles (sentences by position, ``score`` by name) and the Arrow cache of the parsed rows.

A training file holds ONE EXAMPLE PER LINE. The parsing is :mod:`senteval.tables`, the strict reader shared
with SentEval's custom tasks and the BEIR reader (UTF-8, strict CSV that refuses a quoted line break, JSON
lines and arrays); this module owns what the rows mean (the header, the columns, the records' fields) and
turns a :class:`~senteval.tables.TableError` into a :class:`~simcse.errors.SimCSEError`. Errors name the file
and file line (1 = a ``.csv`` header; blank lines count); for a CSV quote, the line it OPENED on. Rows keep
their lines (Arrow schema metadata): :func:`column_roles` names a bad ``score`` cell's line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from senteval.tables import TableError, csv_rows, decode_utf8, json_records, text_lines
from simcse.errors import SimCSEError

SUPPORTED_EXTENSIONS = (".txt", ".csv", ".json", ".jsonl")  # the keys of _READERS

EMPTY_CELL = " "
_TEXT_FORMAT = 2  # bump when the readers change what they produce: old Arrow files are then not reused
_ROWS_PER_RECORD_BATCH = 10_000
_LINES_KEY, _RECORDS_KEY = b"simcse.lines", b"simcse.records"  # Arrow schema metadata
_COLUMN_RULE = ("the column count decides the mode: 1 = unsupervised (each sentence paired with itself), 2 = (anchor, "
                "positive), 3 = (anchor, positive, hard negative); more hard negatives per anchor: name the columns "
                "sent0, sent1, hard_neg_1, ..., hard_neg_k")

Columns = dict[str, list[str]]
Parsed = tuple[Columns, list[int], bool]  # (columns, the file line each row starts on, rows are JSON-array records)


# ----- loading --------------------------------------------------------------------------------------


def load_training_dataset(train_file: str | Path, cache_dir: str | Path | None = None) -> datasets.Dataset:
    """Read a .txt/.csv/.json/.jsonl training file into a Dataset of 1 to 3 string columns.

    See the module docstring for the formats. The file is parsed once: its rows are written to an
    Arrow file named after the file's SHA-256 under ``cache_dir`` (default: the ``datasets`` cache),
    and a later call on the same content memory-maps that file without parsing again. Raises
    :class:`~simcse.errors.SimCSEError` naming the file for a missing file, an unsupported extension,
    bytes that are not UTF-8 (with the line number), an empty or whitespace-only file, malformed rows or
    records (with their line number; a CSV quote left open or spanning lines: the line it opened on), and
    a column count other than 1, 2 or 3.
    """
    path = Path(train_file)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise SimCSEError(f"training file {path} has the unsupported extension {path.suffix or '(none)'!r}; "
                          f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    if not path.is_file():
        raise SimCSEError(f"training file {path} does not exist or is not a file; check `train_file`")
    raw = path.read_bytes()
    root = Path(cache_dir if cache_dir is not None else datasets.config.HF_DATASETS_CACHE)
    # The reader's version and the extension are part of the key: the same bytes read as .txt and as .csv differ.
    arrow = root / "simcse_train" / hashlib.sha256(raw).hexdigest() / f"text-v{_TEXT_FORMAT}{suffix}.arrow"
    if not arrow.is_file():
        columns, lines, records = _parse(raw, path)
        del raw
        _write_arrow(arrow, columns, lines, records)
        del columns, lines
    return datasets.Dataset.from_file(str(arrow))


def _write_arrow(target: Path, columns: Columns, lines: Sequence[int], records: bool) -> None:
    """Write string columns as a ``datasets`` Arrow (IPC stream) file, atomically: a reader never sees
    a half-written file, and concurrent writers (DDP ranks) each write a private temporary file. ``lines``
    (each row's file line) go into the schema metadata, delta-coded and compressed, for :func:`row_location`."""
    schema = datasets.Features({name: datasets.Value("string") for name in columns}).arrow_schema
    deltas = np.diff(np.asarray(lines, dtype=np.int64), prepend=0).astype(np.int32)
    schema = schema.with_metadata({**(schema.metadata or {}), _LINES_KEY: zlib.compress(deltas.tobytes()),
                                   _RECORDS_KEY: b"1" if records else b"0"})
    table = pa.Table.from_pydict({name: pa.array(values, pa.string()) for name, values in columns.items()},
                                 schema=schema)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=_ROWS_PER_RECORD_BATCH)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def row_location(dataset: datasets.Dataset, row: int) -> str:
    """Where row ``row`` (0-based) of a dataset from :func:`load_training_dataset` stands in its file: ``"line
    N"`` (``"line N (record k)"`` in a ``.json`` array); ``"row k"`` for data without stored line numbers."""
    metadata = {}
    if dataset._indices is None and len(dataset.cache_files) == 1:
        with pa.memory_map(dataset.cache_files[0]["filename"]) as source:
            metadata = pa.ipc.open_stream(source).schema.metadata or {}
    deltas = np.frombuffer(zlib.decompress(metadata[_LINES_KEY]), dtype=np.int32) if _LINES_KEY in metadata else []
    if len(deltas) != len(dataset):  # none stored, or a slice (select of contiguous rows) of the file's rows
        return f"row {row + 1}"
    line = int(deltas[:row + 1].sum(dtype=np.int64))
    return f"line {line} (record {row + 1})" if metadata[_RECORDS_KEY] == b"1" else f"line {line}"


def _parse(raw: bytes, path: Path) -> Parsed:
    try:
        text = decode_utf8(raw)
    except TableError as err:
        raise SimCSEError(f"training file {path} is not UTF-8: line {err.line}, {err.message}") from None
    if not text.strip():
        raise SimCSEError(f"training file {path} is empty or holds only whitespace; it needs one sentence per line "
                          "(.txt), a header row and rows (.csv), or records (.json/.jsonl)")
    try:
        parsed = _READERS[path.suffix.lower()](text, path)
    except TableError as err:
        raise SimCSEError(f"training file {path}, line {err.line}: {err.message}") from None
    sentence_columns(list(parsed[0]), f"training file {path}")
    return parsed


def sentence_columns(names: Sequence[str], where: str) -> list[str]:
    """The sentence columns among column ``names`` (all but a ``score`` column), checked by
    :func:`check_column_count`. For the full decision, numbers in undeclared columns included, use
    :func:`column_roles`."""
    sentences = [name for name in names if name != SCORE_COLUMN]
    check_column_count(sentences, where)
    return sentences


SCORE_COLUMN = "score"
#: Role names a column can be declared with (a header or ``--train_columns``).
_ROLE = re.compile(r"sent0|sent1|text|score|hard_neg(_\d+)?")
_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")
_SNIFF_ROWS = 200
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_EXTRA_HARD_NEGATIVE = re.compile(r"hard_neg(_\d+)?")


@dataclass(frozen=True)
class ColumnRoles:
    """What each column of a training dataset is: ``sentences`` (the dataset's column names, in order: anchor,
    then positive, then hard negatives) and ``score`` (the name of the graded-similarity column, or None)."""

    sentences: tuple[str, ...]
    score: str | None = None

    def describe(self) -> str:
        n = len(self.sentences)
        if self.score is not None:
            return "graded pairs (2 sentence columns + score)"
        return {1: "unsupervised (1 column)", 2: "supervised pairs (2 columns)"}.get(
            n, f"supervised + {n - 2} hard negative(s) per anchor ({n} columns)")


def column_roles(dataset: datasets.Dataset, train_columns: str | Sequence[str] | None = None,
                 where: str = "the training dataset") -> ColumnRoles:
    """Decide the role of each column of a training dataset (as loaded by :func:`load_training_dataset`).

    Without ``train_columns`` the header decides: a column named ``score`` holds the graded similarity of a
    pair, every other column is a sentence, by position (anchor, positive, hard negatives). ``train_columns``
    (``"sent0,sent1,score"`` or a list) names the roles of the columns by position instead, for files whose
    header says otherwise: ``sent0``, ``sent1``, ``hard_neg`` / ``hard_neg_<k>``, ``score`` (``text``: one column).

    Raises :class:`~simcse.errors.SimCSEError`, naming the columns and the fix, for: a role list of the wrong
    length or with unknown or repeated names; a score column without exactly two sentence columns; a column
    count outside the column rule; where the roles were not declared, a column after the first whose cells
    all look like numbers (a score trained on as sentences); a score cell not a finite number (:func:`row_location`).
    """
    names = list(dataset.column_names)
    declared = _parse_train_columns(train_columns, names, where) if train_columns is not None else None
    roles = declared if declared is not None else names
    score = next((name for name, role in zip(names, roles) if role == SCORE_COLUMN), None)
    sentences = [name for name, role in zip(names, roles) if role != SCORE_COLUMN]
    sentence_roles = [role for role in roles if role != SCORE_COLUMN]
    if score is not None and len(sentences) != 2:
        found = ", ".join(map(repr, sentences)) or "none"
        raise SimCSEError(f"{where}: the {SCORE_COLUMN!r} column {score!r} grades a pair, so it needs exactly 2 "
                          f"sentence columns beside it, found {len(sentences)} ({found})")
    check_column_count(sentence_roles, where)
    if declared is None and score is None:
        for position, name in enumerate(names[1:], start=2):
            if _ROLE.fullmatch(name):
                continue  # declared by its header name
            sample = [cell for cell in dataset[:_SNIFF_ROWS][name] if cell and cell.strip()]
            if sample and all(_NUMBER.fullmatch(cell) for cell in sample):
                raise SimCSEError(f"{where}: column {position} ({name!r}) holds numbers (e.g. "
                                  f"{', '.join(map(repr, sample[:3]))}), not sentences. If it is a similarity score, "
                                  f"name the column {SCORE_COLUMN!r} or pass `train_columns` "
                                  f"{','.join(['sent0', 'sent1', 'score'][:len(names)])}; if it really holds "
                                  "sentences, name it (e.g. hard_neg) or pass `train_columns` with its role")
    if score is not None:
        _check_scores(dataset, score, where)
    return ColumnRoles(sentences=tuple(sentences), score=score)


def score_value(cell: str | None) -> float | None:
    """The number a score cell holds (decimal notation: ``4.5``, ``-1``, ``2e-1``), else None; also None
    for a value that is not finite as a float32 (nan, inf, 1e39), the type the scores are trained in."""
    value = float(cell) if cell is not None and _NUMBER.fullmatch(cell) else math.nan
    return value if math.isfinite(value) and abs(value) <= _FLOAT32_MAX else None


def _check_scores(dataset: datasets.Dataset, name: str, where: str) -> None:
    chunks = dataset.data.column(name).chunks if dataset._indices is None else [pa.array(dataset[name], pa.string())]
    for row, cell in enumerate(cell for chunk in chunks for cell in chunk.to_pylist()):
        if score_value(cell) is None:
            held = "nothing (an empty cell)" if cell is None or not cell.strip() else repr(cell)
            raise SimCSEError(f"{where}, {row_location(dataset, row)}: the {name!r} column holds {held}, not a finite "
                              "number; every graded pair needs a similarity score (e.g. 4.5): fix it or drop the row")


def _parse_train_columns(train_columns: str | Sequence[str], names: list[str], where: str) -> list[str]:
    roles = [r.strip() for r in train_columns.split(",")] if isinstance(train_columns, str) else list(train_columns)
    if len(roles) != len(names):
        raise SimCSEError(f"`train_columns` {','.join(roles)} names {len(roles)} column role(s), but {where} has "
                          f"{len(names)} column(s) ({', '.join(map(repr, names))}); give one role per column, in order")
    unknown = [role for role in roles if not _ROLE.fullmatch(role)]
    if unknown:
        raise SimCSEError(f"`train_columns`: unknown role(s) {', '.join(map(repr, unknown))}; each column is one "
                          "of sent0, sent1, hard_neg (or hard_neg_1, hard_neg_2, ...), score (text: one column)")
    repeated = sorted({role for role in roles if roles.count(role) > 1})
    if repeated:
        raise SimCSEError(f"`train_columns` names the role(s) {repeated} more than once: {','.join(roles)}")
    sentence_roles = [role for role in roles if role != SCORE_COLUMN]
    expected = ["sent0", "sent1"][:len(sentence_roles)]
    if sentence_roles[:2] != expected and sentence_roles != ["text"]:
        raise SimCSEError(f"`train_columns` {','.join(roles)}: the sentence columns must read sent0, sent1, then "
                          "hard negatives, in order (score may stand anywhere)")
    if any(not role.startswith("hard_neg") for role in sentence_roles[2:]):
        raise SimCSEError(f"`train_columns` {','.join(roles)}: columns after sent0, sent1 are hard negatives "
                          "(hard_neg, hard_neg_1, ...) or the score")
    return roles


def check_column_count(names: Sequence[str], where: str) -> None:
    """Raise SimCSEError naming the columns found unless there are 1, 2 or 3 of them, or more than 3
    whose 3rd and later names are all ``hard_neg_<k>`` (several hard negatives per anchor)."""
    several = len(names) > 3 and all(_EXTRA_HARD_NEGATIVE.fullmatch(str(n)) for n in names[2:])
    if not (1 <= len(names) <= 3 or several):
        found = ", ".join(map(repr, names)) if names else "no columns"
        raise SimCSEError(f"{where} has {len(names)} columns ({found}); {_COLUMN_RULE}")


def _cell(value: str | None) -> str:
    return value if value else EMPTY_CELL


def _read_txt(text: str, path: Path) -> Parsed:
    kept = list(text_lines(text))
    return {"text": [line for _, line in kept]}, [number for number, _ in kept], False


def _read_csv(text: str, path: Path) -> Parsed:
    header, rows, lines = None, [], []
    for start, row in csv_rows(text, holder="a training file"):
        if header is None:
            header = row
            _check_header(header, path)
        elif len(row) != len(header):
            raise SimCSEError(f"training file {path}, line {start}: {len(row)} cells but the header has "
                              f"{len(header)} ({', '.join(map(repr, header))}); quote cells with commas")
        else:
            rows.append(row)
            lines.append(start)
    if header is None:
        raise SimCSEError(f"training file {path} has no header row; the first row of a .csv file must name its columns")
    if not rows:
        raise SimCSEError(f"training file {path} has a header ({', '.join(map(repr, header))}) but no rows")
    return {name: [_cell(row[k]) for row in rows] for k, name in enumerate(header)}, lines, False


def _check_header(header: list[str], path: Path) -> None:
    sentence_columns(header, f"training file {path}")
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise SimCSEError(f"training file {path}: the header's column {position} has no name ({header!r}); "
                              "the first row of a .csv file must name its columns")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise SimCSEError(f"training file {path}: the header repeats the column name(s) {duplicates!r}")


def _read_json(text: str, path: Path) -> Parsed:
    records, array = json_records(text, document=path.suffix.lower() == ".json")  # [(line, record)], from an array
    names: dict[str, None] = {}  # columns in order of first appearance
    for k, (line, record) in enumerate(records, start=1):
        where = f"line {line} (record {k})" if array else f"line {line}"
        if not isinstance(record, dict):
            raise SimCSEError(f"training file {path}, {where}: expected an object like "
                              f'{{"sent0": "...", "sent1": "..."}}, got {type(record).__name__} {_preview(record)}')
        for key, value in record.items():
            if key == SCORE_COLUMN and isinstance(value, (int, float)) and not isinstance(value, bool):
                record[key] = json.dumps(value)  # kept as text like every cell; checked by column_roles
                value = record[key]
            if value is not None and not isinstance(value, str):
                raise SimCSEError(f"training file {path}, {where}: field {key!r} holds {type(value).__name__} "
                                  f"{_preview(value)}, not text; every field of a training record must be a sentence, "
                                  f"except a number in a field named {SCORE_COLUMN!r} (a graded similarity); drop "
                                  "other fields, and lift records nested under a key to the top level")
            names.setdefault(key, None)
    if not names:
        raise SimCSEError(f"training file {path} has records without any text fields; {_COLUMN_RULE}")
    sentence_columns(list(names), f"training file {path}")
    columns = {name: [_cell(record.get(name)) for _, record in records] for name in names}
    return columns, [line for line, _ in records], array


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


_READERS: dict[str, Callable[[str, Path], Parsed]] = {".txt": _read_txt, ".csv": _read_csv, ".json": _read_json,
                                                       ".jsonl": _read_json}


