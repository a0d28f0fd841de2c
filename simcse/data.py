"""Training data: read the training file, tokenize it, and collate batches of sentence pairs or triplets.

The column count of the training file decides the training mode, as in princeton-nlp/SimCSE ``train.py``
(Gao et al. 2021, arXiv:2104.08821, §3 and §4):

* 1 column: unsupervised SimCSE. Each sentence is paired with itself; dropout makes the two views differ.
* 2 columns: (anchor, positive).
* 3 columns: (anchor, positive, hard negative); more hard negatives: columns ``sent0, sent1, hard_neg_1,
  ..., hard_neg_k``.
* pairs with a graded similarity (CoSENT, AnGLE): two sentence columns and a column named ``score``
  holding a number per row (e.g. STS-B train's 0..5), in any position.

Sentence columns are taken by position, whatever their names; only ``score`` is recognised by name
(:func:`column_roles`). A column whose cells all look like numbers but is not declared a score is an
error, never silently trained on as sentences. ``train.py --train_columns sent0,sent1,score`` declares
the roles of a file's columns by position instead of its header. Empty cells become a single space ``" "``, so
every sentence tokenizes to at least one token (GPT-2 turns ``""`` into zero tokens).

Formats, read by this module rather than by the ``datasets`` loaders, because those convert cells
behind the user's back (the csv loader turns the sentence ``"NA"`` into a missing value and numbers into
integers; the text loader splits lines on universal newlines):

* ``.txt``: one sentence per line; only the line break (``\\n`` or ``\\r\\n``) is removed, other
  leading/trailing whitespace is kept. Blank (empty or whitespace-only) lines are DROPPED: the original
  SimCSE kept them as empty sentences, which carry no training signal and, several to a batch, act as
  identical false negatives of each other. The column is named ``text``.
* ``.csv``: a header row, then one row per example (Python's ``csv`` dialect: comma separated, double
  quotes). Blank lines are skipped; a row with a different number of cells than the header is an error.
* ``.json`` / ``.jsonl``: records (objects) whose fields are the columns, either as one JSON array of
  records or as JSON lines (one record per line; also accepted in a ``.json`` file). Every field must hold
  text (or null, which counts as empty); a missing field counts as empty.

The file must be UTF-8 (a leading byte-order mark is allowed).

The path to a batch, at any size (1M sentences: ``bench/data_scale.py``):

1. :func:`load_training_dataset` parses the file once and writes its rows to an Arrow file under
   ``cache_dir`` (the ``datasets`` cache by default), named after the file's SHA-256; a later run on the
   same bytes memory-maps it without parsing.
2. :func:`tokenize_dataset` tokenizes each sentence once with ``Dataset.map`` (batched, fast tokenizer,
   optionally several processes) into int32 token lists, cached beside the text (the next run on the same
   file and tokenizer loads it), and returns :class:`TrainingExamples`. Unsupervised examples are stored
   as one sequence; the collator makes the two views.
3. A DataLoader fetches a batch through ``TrainingExamples.__getitems__`` as flat numpy arrays, and
   :class:`SimCSECollator` pads them with array operations (no Python work per token).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from simcse.errors import SimCSEError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SCORE_COLUMN",
    "SUPPORTED_EXTENSIONS",
    "ColumnRoles",
    "SentenceBatch",
    "SimCSECollator",
    "TrainingExamples",
    "column_roles",
    "load_training_dataset",
    "mask_tokens",
    "pad_sentence_features",
    "sentence_columns",
    "tokenize_dataset",
]

SUPPORTED_EXTENSIONS = (".txt", ".csv", ".json", ".jsonl")  # the keys of _READERS


def check_mlm_probability(probability: float) -> float:
    """The masking rate of the MLM objective, in (0, 1) (1 would mask every token: nothing left to read)."""
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability < 1:
        raise SimCSEError(f"--mlm_probability must be in (0, 1), got {probability!r}; the SimCSE recipe uses 0.15")
    return float(probability)
EMPTY_CELL = " "
IGNORE_INDEX = -100  # label of positions the masked-LM loss ignores (torch cross_entropy's default)

_COLUMN_RULE = (
    "the column count decides the mode: 1 = unsupervised (each sentence paired with itself), "
    "2 = (anchor, positive), 3 = (anchor, positive, hard negative); more hard negatives per anchor: name the "
    "columns sent0, sent1, hard_neg_1, ..., hard_neg_k"
)

Columns = dict[str, list[str]]


# ----- loading --------------------------------------------------------------------------------------


def load_training_dataset(train_file: str | Path, cache_dir: str | Path | None = None) -> datasets.Dataset:
    """Read a .txt/.csv/.json/.jsonl training file into a Dataset of 1 to 3 string columns.

    See the module docstring for the formats. The file is parsed once: its rows are written to an
    Arrow file named after the file's SHA-256 under ``cache_dir`` (default: the ``datasets`` cache),
    and a later call on the same content memory-maps that file without parsing again. Raises
    :class:`~simcse.errors.SimCSEError` naming the file for a missing file, an unsupported extension,
    bytes that are not UTF-8 (with the line number), an empty or whitespace-only file, malformed rows or
    records (with their line or record number), and a column count other than 1, 2 or 3.
    """
    path = Path(train_file)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise SimCSEError(
            f"training file {path} has the unsupported extension {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not path.is_file():
        raise SimCSEError(f"training file {path} does not exist or is not a file; check --train_file")
    raw = path.read_bytes()
    root = Path(cache_dir if cache_dir is not None else datasets.config.HF_DATASETS_CACHE)
    # The reader's version and the extension are part of the key: the same bytes read as .txt and as .csv differ.
    arrow = root / "simcse_train" / hashlib.sha256(raw).hexdigest() / f"text-v{_TEXT_FORMAT}{suffix}.arrow"
    if not arrow.is_file():
        columns = _parse(raw, path)
        del raw
        _write_arrow(arrow, columns)
        del columns
    return datasets.Dataset.from_file(str(arrow))


_TEXT_FORMAT = 1  # bump when the readers change what they produce: old Arrow files are then not reused


def _write_arrow(target: Path, columns: Columns) -> None:
    """Write string columns as a ``datasets`` Arrow (IPC stream) file, atomically: a reader never sees
    a half-written file, and concurrent writers (DDP ranks) each write a private temporary file."""
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    table = pa.Table.from_pydict({name: pa.array(values, pa.string()) for name, values in columns.items()},
                                 schema=features.arrow_schema)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=_ROWS_PER_RECORD_BATCH)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


_ROWS_PER_RECORD_BATCH = 10_000


def _parse(raw: bytes, path: Path) -> Columns:
    text = _decode_utf8(raw, path)
    if not text.strip():
        raise SimCSEError(
            f"training file {path} is empty or holds only whitespace; it needs one sentence per line (.txt), "
            "a header row and rows (.csv), or records (.json/.jsonl)"
        )
    columns = _READERS[path.suffix.lower()](text, path)
    sentence_columns(list(columns), f"training file {path}")
    return columns


def _decode_utf8(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise SimCSEError(
            f"training file {path} is not UTF-8: line {line}, byte {column} is 0x{raw[err.start]:02x} "
            f"({err.reason}); convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    return text.removeprefix("\ufeff")


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


@dataclass(frozen=True)
class ColumnRoles:
    """What each column of a training dataset is: ``sentences`` (the dataset's column names, in order:
    anchor, then positive, then hard negatives) and ``score`` (the name of the graded-similarity column,
    or None)."""

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

    Without ``train_columns`` the header decides: a column named ``score`` holds the graded similarity of
    a pair, every other column is a sentence, by position (anchor, positive, hard negatives; see the
    module docstring). ``train_columns`` (``"sent0,sent1,score"`` or a list) names the roles of the
    columns by position instead, for files whose header says otherwise: each of ``sent0``, ``sent1``,
    ``hard_neg`` / ``hard_neg_<k>``, ``score`` (``text`` or ``sent0`` alone for one column).

    Raises :class:`~simcse.errors.SimCSEError`, naming the columns and the fix, for: a role list of the
    wrong length or with unknown or repeated names; a score column without exactly two sentence columns;
    a column count outside the column rule; and, where the roles were not declared, a column after the
    first whose cells all look like numbers (a score that would otherwise be trained on as sentences).
    """
    names = list(dataset.column_names)
    declared = _parse_train_columns(train_columns, names, where) if train_columns is not None else None
    roles = declared if declared is not None else names
    score = next((name for name, role in zip(names, roles) if role == SCORE_COLUMN), None)
    sentences = [name for name, role in zip(names, roles) if role != SCORE_COLUMN]
    sentence_roles = [role for role in roles if role != SCORE_COLUMN]
    if score is not None and len(sentences) != 2:
        raise SimCSEError(
            f"{where}: the {SCORE_COLUMN!r} column {score!r} grades a pair, so it needs exactly 2 sentence columns "
            f"beside it, found {len(sentences)} ({', '.join(map(repr, sentences)) or 'none'})"
        )
    check_column_count(sentence_roles, where)
    if declared is None and score is None:
        for position, name in enumerate(names[1:], start=2):
            if _ROLE.fullmatch(name):
                continue  # declared by its header name
            sample = [cell for cell in dataset[:_SNIFF_ROWS][name] if cell and cell.strip()]
            if sample and all(_NUMBER.fullmatch(cell) for cell in sample):
                raise SimCSEError(
                    f"{where}: column {position} ({name!r}) holds numbers (e.g. {', '.join(map(repr, sample[:3]))}), "
                    f"not sentences. If it is a similarity score, name the column {SCORE_COLUMN!r} or pass "
                    f"--train_columns {','.join(['sent0', 'sent1', 'score'][:len(names)])}; if it really holds "
                    f"sentences, name it (e.g. hard_neg) or pass --train_columns with its role"
                )
    return ColumnRoles(sentences=tuple(sentences), score=score)


def _parse_train_columns(train_columns: str | Sequence[str], names: list[str], where: str) -> list[str]:
    roles = [r.strip() for r in train_columns.split(",")] if isinstance(train_columns, str) else list(train_columns)
    if len(roles) != len(names):
        raise SimCSEError(
            f"--train_columns {','.join(roles)} names {len(roles)} column role(s), but {where} has {len(names)} "
            f"column(s) ({', '.join(map(repr, names))}); give one role per column, in order"
        )
    unknown = [role for role in roles if not _ROLE.fullmatch(role)]
    if unknown:
        raise SimCSEError(f"--train_columns: unknown role(s) {', '.join(map(repr, unknown))}; each column is one "
                          "of sent0, sent1, hard_neg (or hard_neg_1, hard_neg_2, ...), score (text: one column)")
    repeated = sorted({role for role in roles if roles.count(role) > 1})
    if repeated:
        raise SimCSEError(f"--train_columns names the role(s) {repeated} more than once: {','.join(roles)}")
    sentence_roles = [role for role in roles if role != SCORE_COLUMN]
    expected = ["sent0", "sent1"][:len(sentence_roles)]
    if sentence_roles[:2] != expected and sentence_roles != ["text"]:
        raise SimCSEError(f"--train_columns {','.join(roles)}: the sentence columns must read sent0, sent1, then "
                          "hard negatives, in order (score may stand anywhere)")
    if any(not role.startswith("hard_neg") for role in sentence_roles[2:]):
        raise SimCSEError(f"--train_columns {','.join(roles)}: columns after sent0, sent1 are hard negatives "
                          "(hard_neg, hard_neg_1, ...) or the score")
    return roles


_EXTRA_HARD_NEGATIVE = re.compile(r"hard_neg(_\d+)?")


def check_column_count(names: Sequence[str], where: str) -> None:
    """Raise SimCSEError naming the columns found unless there are 1, 2 or 3 of them, or more than 3
    whose 3rd and later names are all ``hard_neg_<k>`` (several hard negatives per anchor)."""
    several = len(names) > 3 and all(_EXTRA_HARD_NEGATIVE.fullmatch(str(n)) for n in names[2:])
    if not (1 <= len(names) <= 3 or several):
        found = ", ".join(map(repr, names)) if names else "no columns"
        raise SimCSEError(f"{where} has {len(names)} columns ({found}); {_COLUMN_RULE}")


def _cell(value: str | None) -> str:
    return value if value else EMPTY_CELL


def _read_txt(text: str, path: Path) -> Columns:
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final line break ends the last line; it does not start an empty one
    sentences = [line.removesuffix("\r") for line in lines]
    return {"text": [s for s in sentences if s.strip()]}


def _read_csv(text: str, path: Path) -> Columns:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if header is None:
                header = row
                _check_header(header, path)
                continue
            if len(row) != len(header):
                raise SimCSEError(
                    f"training file {path}, line {reader.line_num}: {len(row)} cells but the header has "
                    f"{len(header)} ({', '.join(map(repr, header))}); quote cells that contain commas"
                )
            rows.append(row)
    except csv.Error as err:
        raise SimCSEError(f"training file {path}, line {reader.line_num}: not valid CSV ({err})") from None
    if header is None:
        raise SimCSEError(f"training file {path} has no header row; the first row of a .csv file must name its columns")
    if not rows:
        raise SimCSEError(f"training file {path} has a header ({', '.join(map(repr, header))}) but no rows")
    return {name: [_cell(row[k]) for row in rows] for k, name in enumerate(header)}


def _check_header(header: list[str], path: Path) -> None:
    sentence_columns(header, f"training file {path}")
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise SimCSEError(
                f"training file {path}: the header's column {position} has no name ({header!r}); "
                "the first row of a .csv file must name its columns"
            )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise SimCSEError(f"training file {path}: the header repeats the column name(s) {duplicates!r}")


def _read_json(text: str, path: Path) -> Columns:
    records: list[tuple[str, Any]] = []  # (where, record)
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # not one JSON document: read it as JSON lines
        if isinstance(document, list):
            records = [(f"record {k}", record) for k, record in enumerate(document, start=1)]
        elif document is not None:
            records = [("record 1", document)]
    if not records:
        records = _json_lines(text, path)

    names: dict[str, None] = {}  # columns in order of first appearance
    for where, record in records:
        if not isinstance(record, dict):
            raise SimCSEError(
                f"training file {path}, {where}: expected an object like "
                f'{{"sent0": "...", "sent1": "..."}}, got {type(record).__name__} {_preview(record)}'
            )
        for key, value in record.items():
            if key == SCORE_COLUMN and isinstance(value, (int, float)) and not isinstance(value, bool):
                record[key] = json.dumps(value)  # kept as text like every cell; parsed by tokenize_dataset
                value = record[key]
            if value is not None and not isinstance(value, str):
                raise SimCSEError(
                    f"training file {path}, {where}: field {key!r} holds {type(value).__name__} "
                    f"{_preview(value)}, not text; every field of a training record must be a sentence, "
                    f"except a number in a field named {SCORE_COLUMN!r} (a graded similarity); drop other fields, "
                    "and lift records nested under a key to the top level"
                )
            names.setdefault(key, None)
    if not names:
        raise SimCSEError(f"training file {path} has records without any text fields; {_COLUMN_RULE}")
    sentence_columns(list(names), f"training file {path}")
    return {name: [_cell(record.get(name)) for _, record in records] for name in names}


def _json_lines(text: str, path: Path) -> list[tuple[str, Any]]:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise SimCSEError(
                f"training file {path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                "expected a JSON array of records or one record per line"
            ) from None
    return records


def _preview(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


_READERS: dict[str, Callable[[str, Path], Columns]] = {
    ".txt": _read_txt,
    ".csv": _read_csv,
    ".json": _read_json,
    ".jsonl": _read_json,
}


# ----- tokenization ---------------------------------------------------------------------------------

TOKEN_FEATURES = datasets.Features({"input_ids": datasets.List(datasets.List(datasets.Value("int32")))})
#: ... with the graded similarity of each pair (data with a ``score`` column).
SCORED_TOKEN_FEATURES = datasets.Features({**TOKEN_FEATURES, SCORE_COLUMN: datasets.Value("float32")})
_TOKEN_FORMAT = 1  # bump when the stored token layout changes: old token caches are then not reused


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 32,
    num_proc: int | None = None,
    overwrite_cache: bool = False,
    batch_size: int = 4096,
    roles: ColumnRoles | None = None,
) -> TrainingExamples:
    """Tokenize every sentence column once; the result holds each sentence's token ids once.

    Each example becomes ``input_ids``: a list of num_sent token lists, num_sent = the number of sentence
    columns (1 for unsupervised data: :class:`SimCSECollator` makes the two views of a 1-sentence
    example, so its tokens are not stored twice). Token ids are int32, truncated to ``max_seq_length``
    (special tokens included) and not padded (the collator pads each batch); attention masks are not
    stored (the collator derives them from the lengths).

    Runs ``Dataset.map(batched=True)`` in ``num_proc`` processes (None: one process, in which the fast
    tokenizer itself spreads each batch over the cores). For a file-backed dataset (as made by
    :func:`load_training_dataset`) the result is cached beside it, keyed by the dataset, the tokenizer's
    full definition and ``max_seq_length``, so the next run on the same file and tokenizer memory-maps
    it instead of tokenizing (``overwrite_cache=True`` recomputes it).

    ``roles``: the columns' roles (:func:`column_roles`; decided from the header when None). A ``score``
    column is parsed into a float32 column ``score`` (an error names the row of a cell that is not a
    finite number).
    """
    roles = column_roles(dataset) if roles is None else roles
    columns = list(roles.sentences)
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise SimCSEError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
    _check_single_segment_types(tokenizer)
    cache_file = None
    if dataset.cache_files:
        key = {"format": _TOKEN_FORMAT, "data": dataset._fingerprint, "columns": columns, "score": roles.score,
               "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_seq_length, "empty": EMPTY_CELL}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        cache_file = str(Path(dataset.cache_files[0]["filename"]).parent / f"tokens-{digest}.arrow")
    tokenized = dataset.with_format("arrow").map(
        _tokenize_batch,
        batched=True,
        with_indices=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=list(dataset.column_names),
        features=TOKEN_FEATURES if roles.score is None else SCORED_TOKEN_FEATURES,
        fn_kwargs={"tokenizer": tokenizer, "columns": columns, "max_length": max_seq_length, "score": roles.score},
        cache_file_name=cache_file,
        load_from_cache_file=not overwrite_cache,
        desc="Tokenizing the training data",
    )
    return TrainingExamples(tokenized.with_format(None))


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of everything that decides a tokenizer's ids: its class and, for a fast tokenizer, the
    full definition of its backend (vocabulary, normalizer, pre-tokenizer, post-processor, added tokens),
    without the truncation/padding state, which changes as the tokenizer is called."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    else:  # a slow (Python) tokenizer: datasets' pickle-based hash of the object
        text = datasets.fingerprint.Hasher.hash(tokenizer)
    return hashlib.sha256(f"{type(tokenizer).__qualname__}\n{text}".encode()).hexdigest()


def _check_single_segment_types(tokenizer: PreTrainedTokenizerBase) -> None:
    # Token type ids are not stored: the collator gives zeros, which is what BERT-style tokenizers return
    # for a single sentence. A tokenizer that returns others would silently change the model's input.
    types = tokenizer("a b", return_token_type_ids=True).get("token_type_ids")
    if types is not None and any(types):
        raise SimCSEError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} gives a single sentence "
            f"non-zero token type ids {types}; only tokenizers with all-zero single-sentence type ids are supported"
        )


def _tokenize_batch(batch: pa.Table, indices: list[int], tokenizer: PreTrainedTokenizerBase, columns: list[str],
                    max_length: int, score: str | None = None) -> pa.Table:
    """Tokenize a batch of rows into one ``input_ids`` column of type list<list<int32>> (and the float32
    ``score`` column parsed from column ``score`` when given)."""
    encoded = [
        tokenizer([_cell(text) for text in batch.column(name).to_pylist()], max_length=max_length, truncation=True,
                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        for name in columns
    ]
    num_sent = len(columns)
    # example-major: sentence k of example i is sequences[i * num_sent + k]
    sequences = encoded[0] if num_sent == 1 else [seq for example in zip(*encoded) for seq in example]
    lengths = np.fromiter(map(len, sequences), dtype=np.int32, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=int(offsets[-1]))
    sentences = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    rows = pa.ListArray.from_arrays(pa.array(np.arange(0, len(sequences) + 1, num_sent, dtype=np.int32)), sentences)
    if score is None:
        return pa.Table.from_arrays([rows], schema=TOKEN_FEATURES.arrow_schema)
    scores = _parse_scores(batch.column(score).to_pylist(), indices, score)
    return pa.Table.from_arrays([rows, pa.array(scores, pa.float32())], schema=SCORED_TOKEN_FEATURES.arrow_schema)


def _parse_scores(cells: list[str | None], indices: list[int], name: str) -> np.ndarray:
    scores = np.empty(len(cells), dtype=np.float32)
    for k, cell in enumerate(cells):
        try:
            value = float(cell) if cell is not None and _NUMBER.fullmatch(cell) else float("nan")
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise SimCSEError(f"training data row {indices[k] + 1}: the {name!r} column holds {cell!r}, not a "
                              "finite number; every row of graded pairs needs a similarity score")
        scores[k] = value
    return scores


def _batch_scores(features: Sequence[dict[str, Any]] | SentenceBatch) -> torch.Tensor | None:
    """(batch,) float32 scores of graded pairs, or None for data without a score column."""
    if isinstance(features, SentenceBatch):
        return None if features.scores is None else torch.as_tensor(np.asarray(features.scores, dtype=np.float32))
    if not features or SCORE_COLUMN not in features[0]:
        return None
    return torch.tensor([float(feature[SCORE_COLUMN]) for feature in features], dtype=torch.float32)


def _no_pad_token_error(tokenizer: PreTrainedTokenizerBase) -> SimCSEError:
    return SimCSEError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has no pad token, so "
        "batches cannot be padded; for decoders such as GPT-2 set `tokenizer.pad_token = tokenizer.eos_token`"
    )


# ----- the tokenized examples -----------------------------------------------------------------------


@dataclass(frozen=True)
class SentenceBatch:
    """The sentences of a batch of examples, unpadded: ``token_ids`` holds the batch * num_sent token
    sequences one after the other (example-major), ``lengths`` their lengths."""

    token_ids: np.ndarray  # (sum(lengths),) integer ids
    lengths: np.ndarray  # (batch * num_sent,)
    num_sent: int
    scores: np.ndarray | None = None  # (batch,) float32 graded similarities, when the data has a score column
    indices: np.ndarray | None = None  # (batch,) the examples' positions in the dataset (keys of the MLM masks)

    def __len__(self) -> int:
        return len(self.lengths) // self.num_sent


class TrainingExamples(torch.utils.data.Dataset):
    """The tokenized training set: a torch Dataset over the memory-mapped Arrow table of token ids.

    ``examples[i]`` is ``{"input_ids": [num_sent token lists]}`` (plus ``"score": float`` for graded
    pairs). A DataLoader fetches a whole batch at
    once through ``__getitems__``, which returns a :class:`SentenceBatch` of numpy arrays read straight
    from Arrow, so neither fetching nor collating does Python work per token. ``dataset`` is the
    underlying ``datasets.Dataset`` (column ``input_ids``, list<list<int32>>, and ``score``, float32).
    """

    def __init__(self, dataset: datasets.Dataset):
        if list(dataset.column_names) not in (["input_ids"], ["input_ids", SCORE_COLUMN]):
            raise SimCSEError(f"expected a dataset with the column 'input_ids' (and optionally {SCORE_COLUMN!r}) "
                              f"from tokenize_dataset, got columns {dataset.column_names}")
        if dataset._indices is not None:  # a select()/shuffle() view: write its rows out in order once
            dataset = dataset.flatten_indices()
        self.dataset = dataset
        self._arrow = dataset.with_format("arrow")
        self.num_sent = (int(pc.list_value_length(self._arrow[:1].column("input_ids")).to_numpy()[0])
                         if len(dataset) else 1)
        self.has_scores = SCORE_COLUMN in dataset.column_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, list[list[int]]]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"example {index} is out of range for {len(self)} examples")
        row = self._arrow[int(index)]
        example = {"input_ids": row.column("input_ids")[0].as_py()}
        if self.has_scores:
            example[SCORE_COLUMN] = row.column(SCORE_COLUMN)[0].as_py()
        return example

    def __iter__(self) -> Iterator[dict[str, list[list[int]]]]:
        for index in range(len(self)):
            yield self[index]

    def __getitems__(self, indices: Sequence[int]) -> SentenceBatch:
        table = self._arrow[list(indices)]
        rows = table.column("input_ids").combine_chunks()  # list<list<int32>>
        sentences = rows.flatten()
        scores = table.column(SCORE_COLUMN).to_numpy() if self.has_scores else None
        return SentenceBatch(token_ids=sentences.flatten().to_numpy(),
                             lengths=pc.list_value_length(sentences).to_numpy(), num_sent=self.num_sent, scores=scores,
                             indices=np.asarray(indices, dtype=np.int64))

    def token_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """All token ids in storage order, one Arrow chunk at a time: (token_ids, lengths, num_sent)."""
        for chunk in self.dataset.data.column("input_ids").chunks:
            sentences = chunk.flatten()
            yield sentences.flatten().to_numpy(), pc.list_value_length(sentences).to_numpy(), self.num_sent


# ----- collation ------------------------------------------------------------------------------------


def pad_sentence_features(
    features: Sequence[dict[str, Any]] | SentenceBatch,
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    pad_to_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad the examples' num_sent sequences into (batch, num_sent, max_len) tensors.

    ``features``: a :class:`SentenceBatch`, or dicts holding num_sent sequences per key. ``input_ids``
    are padded with ``pad_token_id``, ``attention_mask`` and ``token_type_ids`` (when the dicts hold them)
    with 0; an ``attention_mask`` is built from the lengths otherwise. Other keys are dropped. max_len is
    the longest sequence, at least ``pad_to_length``, rounded up to ``pad_to_multiple_of``.
    """
    given: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if isinstance(features, SentenceBatch):
        batch = features
    else:
        batch = _sentence_batch(features)
        for key in ("attention_mask", "token_type_ids"):
            if key in features[0]:
                given[key] = _flatten(features, key)
    if not len(batch):
        raise SimCSEError("cannot collate an empty list of features")
    lengths = np.asarray(batch.lengths, dtype=np.int64)
    max_len = max(int(lengths.max()), pad_to_length or 0)
    if pad_to_multiple_of:
        max_len = -(-max_len // pad_to_multiple_of) * pad_to_multiple_of
    shape = (len(batch), batch.num_sent, max_len)
    filled = np.arange(max_len) < lengths[:, None]  # (batch * num_sent, max_len)

    def padded(values: np.ndarray, pad_value: int) -> torch.Tensor:
        out = np.full(filled.shape, pad_value, dtype=np.int64)
        out[filled] = values  # row-major order of the filled cells = the sequences one after the other
        return torch.from_numpy(out).view(shape)

    out = {"input_ids": padded(batch.token_ids, pad_token_id)}
    out["attention_mask"] = padded(given["attention_mask"][0], 0) if "attention_mask" in given else \
        torch.from_numpy(filled.astype(np.int64)).view(shape)
    if "token_type_ids" in given:
        out["token_type_ids"] = padded(given["token_type_ids"][0], 0)
    return out


def _sentence_batch(features: Sequence[dict[str, Any]]) -> SentenceBatch:
    if not features:
        raise SimCSEError("cannot collate an empty list of features")
    num_sent = _num_sent(features[0], 0)
    for index, feature in enumerate(features):
        if _num_sent(feature, index) != num_sent:
            raise SimCSEError(
                f"feature {index} holds {_num_sent(feature, index)} sentences but feature 0 holds {num_sent}; "
                "every example of a batch must come from the same training file"
            )
    values, lengths = _flatten(features, "input_ids")
    return SentenceBatch(token_ids=values, lengths=lengths, num_sent=num_sent)


def _flatten(features: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The key's sequences of all features, concatenated (one numpy conversion per sequence), and their lengths."""
    sequences = [np.asarray(seq, dtype=np.int64).reshape(-1) for feature in features for seq in feature[key]]
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    return (np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)), lengths


def _num_sent(feature: dict[str, Any], index: int) -> int:
    ids = feature.get("input_ids")
    if ids is None or not len(ids) or not all(isinstance(seq, (list, tuple, np.ndarray, torch.Tensor)) for seq in ids):
        raise SimCSEError(
            f"feature {index} must hold input_ids as a list of num_sent token lists (as made by "
            f"tokenize_dataset), got {type(ids).__name__}"
        )
    return len(ids)


_MASK_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # SplitMix64's multipliers as signed 64-bit integers
_MASK_M2 = 0x94D049BB133111EB - (1 << 64)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finalizer (Steele, Lea and Flood 2014) on int64 tensors, wrapping arithmetic."""
    x = x ^ _shift_right(x, 30)
    x = x * _MASK_M1
    x = x ^ _shift_right(x, 27)
    x = x * _MASK_M2
    return x ^ _shift_right(x, 31)


def keyed_uniforms(shape: tuple[int, int, int], seed: int, epoch: int, indices: torch.Tensor,
                   draw: int) -> torch.Tensor:
    """(batch, num_sent, length) uniforms in [0, 1), each a hash of (seed, epoch, example index, sentence,
    position, draw): the same number for a token wherever its example lands (which process, which batch
    row, how much padding), so masks do not depend on how a global batch is split across processes."""
    batch, num_sent, length = shape
    key = _mix64(torch.tensor([seed * 0x9E3779B9 + epoch], dtype=torch.int64))
    x = _mix64(key ^ (indices.to(torch.int64).view(batch, 1, 1) * 0x51ED27 + 1))
    slot = (torch.arange(num_sent).view(1, num_sent, 1) * 8192 + torch.arange(length).view(1, 1, length)) * 4 + draw
    x = _mix64(x ^ slot)
    return _shift_right(x, 11).to(torch.float64) / float(1 << 53)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    keys: tuple[int, int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al. 2019, arXiv:1810.04805) for the auxiliary masked-LM loss.

    Each token that is neither padding (``attention_mask`` 0) nor one of ``special_ids`` is chosen with
    probability ``mlm_probability``. Of the chosen tokens 80% become ``mask_token_id``, 10% a uniformly
    random id in [0, vocab_size), 10% stay. Returns new tensors ``(masked_ids, labels)`` shaped like
    ``input_ids``: labels hold the original id at chosen positions and -100 elsewhere. ``input_ids`` is
    not modified. Draws from ``generator`` when given, else from torch's global RNG; with ``keys`` =
    (seed, epoch, example indices) of a (batch, num_sent, length) input, every draw is instead a hash of
    the token's example, sentence and position (:func:`keyed_uniforms`), so W processes mask exactly as
    one process on the whole batch does.
    """
    specials = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, specials)

    draws = iter(range(4))

    def coin(probability: float) -> torch.Tensor:
        if keys is not None:
            return keyed_uniforms(tuple(input_ids.shape), *keys, next(draws)).to(input_ids.device) < probability
        probs = torch.full(input_ids.shape, probability, device=input_ids.device)
        return torch.bernoulli(probs, generator=generator).bool()

    chosen = coin(mlm_probability) & eligible
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    masked_ids = input_ids.clone()
    to_mask = chosen & coin(0.8)
    masked_ids[to_mask] = mask_token_id
    to_random = chosen & ~to_mask & coin(0.5)  # half of the remaining 20%
    if keys is not None:
        every = (keyed_uniforms(tuple(input_ids.shape), *keys, 3) * vocab_size).long().clamp_max(vocab_size - 1)
        random_ids = every.to(input_ids.device)[to_random]
    else:
        random_ids = torch.randint(vocab_size, (int(to_random.sum()),), generator=generator, device=input_ids.device)
    masked_ids[to_random] = random_ids.to(input_ids.dtype)
    return masked_ids, labels


@dataclass
class SimCSECollator:
    """Collate tokenized examples (each holding num_sent sequences) into a training batch.

    Takes the :class:`SentenceBatch` that :class:`TrainingExamples` hands a DataLoader, or a list of
    example dicts. Returns ``input_ids`` and ``attention_mask`` (and ``token_type_ids``, zeros unless the
    examples carry their own, when the tokenizer takes them), each (batch, num_sent, max_len),
    right-padded to the longest sequence of the batch (at least ``pad_to_length``, rounded up to
    ``pad_to_multiple_of``) with the tokenizer's pad token. A batch of 1-sentence examples (unsupervised
    data) becomes num_sent = 2: the same tokens twice, two dropout views in the encoder. With ``do_mlm``
    also ``mlm_input_ids`` and ``mlm_labels`` of the same shape, from :func:`mask_tokens` (special tokens
    of the tokenizer, including its unknown token, and padding are never chosen; each view is masked
    independently; ``input_ids`` is left untouched). Graded pairs (examples with a ``score``) also give
    ``scores``, (batch,) float32, which the trainer hands to the loss.

    ``generator`` makes masking reproducible in tests; leave it None in training, where DataLoader workers
    seed the global RNG differently (a shared generator would give every worker the same masks).
    """

    tokenizer: PreTrainedTokenizerBase
    do_mlm: bool = False
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    generator: torch.Generator | None = None
    pad_to_length: int | None = None
    # Keyed masks (train.py sets mask_seed = --seed; the trainer sets epoch at each epoch): each token's
    # draws are a hash of (seed, epoch, example index, sentence, position), the same whichever process or
    # batch row the example lands in, so DDP masks exactly as one process on the global batch.
    mask_seed: int | None = None
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.tokenizer.pad_token_id is None:
            raise _no_pad_token_error(self.tokenizer)
        for name in ("pad_to_multiple_of", "pad_to_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SimCSEError(f"{name} must be a positive integer or None, got {value!r}")
        if self.do_mlm:
            check_mlm_probability(self.mlm_probability)
            if self.tokenizer.mask_token_id is None:
                raise SimCSEError(
                    f"--do_mlm needs a tokenizer with a mask token, and {self.tokenizer.name_or_path!r} has "
                    "none (decoders such as GPT-2 are not trained with masked LM); drop --do_mlm"
                )
        self._token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())

    def __call__(self, features: Sequence[dict[str, Any]] | SentenceBatch) -> dict[str, torch.Tensor]:
        batch = pad_sentence_features(features, self.tokenizer.pad_token_id, self.pad_to_multiple_of,
                                      self.pad_to_length)
        if self._token_types and "token_type_ids" not in batch:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if batch["input_ids"].shape[1] == 1:  # unsupervised: two views of each sentence
            batch = {key: value.repeat(1, 2, 1) for key, value in batch.items()}
        scores = _batch_scores(features)
        if scores is not None:
            batch["scores"] = scores
        if self.do_mlm:
            batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(
                batch["input_ids"],
                batch["attention_mask"],
                mask_token_id=self.tokenizer.mask_token_id,
                vocab_size=len(self.tokenizer),
                special_ids=self.tokenizer.all_special_ids,
                mlm_probability=self.mlm_probability,
                generator=self.generator,
                keys=self._mask_keys(features, batch["input_ids"].shape[0]),
            )
        return batch

    def _mask_keys(self, features, rows: int) -> tuple[int, int, torch.Tensor] | None:
        indices = getattr(features, "indices", None)
        if self.mask_seed is None or indices is None or len(indices) != rows:
            return None
        return self.mask_seed, self.epoch, torch.from_numpy(np.asarray(indices, dtype=np.int64))
