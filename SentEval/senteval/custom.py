"""Your own data: sentence-pair similarity files and labelled text files as SentEval tasks.

Two task classes with the engine's task interface (``do_prepare(params, prepare)``, ``run(params,
batcher)``), run with :func:`evaluate` instead of a registry name because they are built from files:

* :class:`CustomSTSEval`: pairs with a gold score, either a float similarity (STS-B style) or a 0/1
  label (LCQMC, PAWS-X, QQP style). Scored exactly as the built-in STS tasks, by the same code
  (:class:`senteval.sts.STSEval`): each distinct sentence is encoded once, the cosine of the two
  embeddings is correlated with the gold column, Pearson and Spearman. With a 0/1 label the Spearman
  is the rank-biserial-style agreement between cosine and label (ties in the label are averaged).
* :class:`CustomClassificationEval`: text + label, any number of classes, probed on frozen embeddings
  by the transfer tasks' logistic regression and penalty selection (:mod:`senteval.validation`):
  :class:`~senteval.validation.SplitClassifier` when a dev file is given (penalty chosen on dev,
  scored on test, as SST2), else :class:`~senteval.validation.KFoldClassifier` (k-fold
  cross-validation on train chooses the penalty, then test, as TREC). Reports accuracy and macro-F1.

File formats, chosen by extension: ``.tsv`` / ``.txt`` (tab-separated, no quoting: a quote character is
text), ``.csv`` (comma-separated, strict CSV quoting) and ``.jsonl`` (one JSON object a line, columns
are keys). They are parsed by :mod:`senteval.tables`, the strict reader the training files share: UTF-8
(a BOM is ignored), lines end at ``\\n`` or ``\\r\\n`` (a lone ``\\r`` is an error), blank lines are skipped,
and in a CSV a quote left open, or a quoted cell running over a line break (what an unclosed quote does to
the rows after it), is an error naming the line it opened on. Here, too, a file is read as written or not
at all: every row has as many cells as the first (a stray or missing separator is an error naming the line).

Columns: by name (``("sentence1", "sentence2", "label")``; needs a header row or jsonl keys) or by 0-based
index (``(0, 1, 2)``). Left out, they are found as follows, so the LCQMC (``s1<TAB>s2<TAB>label``, no
header) and PAWS-X (header ``id sentence1 sentence2 label``) layouts load as they are:

* a header row naming the columns: the first of :data:`PAIR_COLUMN_NAMES` and of
  :data:`SCORE_COLUMN_NAMES` (pairs), of :data:`TEXT_COLUMN_NAMES` and :data:`LABEL_COLUMN_NAMES`
  (classification), case-insensitive;
* otherwise exactly 3 columns ``sentence1, sentence2, score`` (pairs) or 2 columns ``text, label``
  (classification).

Without a header naming the columns, the first row is a header when its score / label cell is not
meant as a number while the later rows' cells are (most of them: a bad value further down is then an
error naming its own line). ``nan``, ``inf`` or ``3,5`` in the first row are meant as numbers, so that
row is data and the value an error, never a silently skipped row. The decision is logged
(logger ``senteval.custom``) and kept in the task's ``layout``.

Per file, ``FILE:NAME:COLUMNS`` (:func:`parse_spec`) gives that file's columns, overriding the
command-line default (``--custom_columns``) for it alone.

Labels of a classification file are all numbers or all strings (a mix is an error, usually an
unrecognised header). Class ids follow the sorted labels: numbers by value, strings alphabetically;
``classes`` in the result lists them in id order. The dev and test labels must occur in train.

Text is used exactly as it is in the file (no whitespace split and re-join, no stripping), so languages
written without spaces work. Each sentence reaches the batcher as a one-element token list ``[text]``:
a batcher that joins tokens with spaces (evaluation.py's, the trainer's, the original SimCSE one) gets
``text`` back unchanged; a batcher that looks at single words (e.g. bag-of-vectors) sees one token.

Example::

    task = CustomSTSEval("lcqmc_dev.tsv", name="lcqmc")
    result = evaluate(task, {"batch_size": 128}, batcher)   # {"spearman": .., "pearson": .., ...}
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from senteval.binary import encode_labelled
from senteval.engine import SE
from senteval.errors import SentEvalError
from senteval.sts import STSEval
from senteval.tables import TableError, csv_rows, decode_utf8, json_lines, text_lines, tsv_rows
from senteval.utils import Params, make_params
from senteval.validation import KFoldClassifier, ProbeSettings, SplitClassifier

FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
PAIR_COLUMN_NAMES = (
    ("sentence1", "sentence2"),
    ("sentence_a", "sentence_b"),
    ("text_a", "text_b"),
    ("text1", "text2"),
    ("question1", "question2"),
    ("s1", "s2"),
)
SCORE_COLUMN_NAMES = ("label", "score", "similarity", "relatedness_score", "gold_score")
TEXT_COLUMN_NAMES = ("text", "sentence", "content", "review")
LABEL_COLUMN_NAMES = ("label", "labels", "class", "category", "target")

Column = str | int
Row = tuple[int, list[str]]  # (line number in the file, cells)
SUBSET = "pairs"  # the single subset of a custom STS task
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Command-line specifications


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``'FILE[:NAME[:COLUMNS]]'`` -> (FILE, NAME or None, COLUMNS or None).

    COLUMNS are this file's columns, written as ``--custom_columns`` (``sentence1,sentence2,label`` or
    ``2,3,1``); they override the flag for this file only. An empty NAME keeps the default name:
    ``pairs.tsv::0,1,2``. A colon separates only when what follows it holds no path separator and the
    whole string is not an existing file, so ``C:\\data\\x.tsv`` and file names with colons still work.
    """
    if Path(spec).exists():
        return spec, None, None
    parts = spec.split(":")
    for count in (2, 1):
        body, tail = ":".join(parts[:-count]), parts[-count:]
        if len(parts) <= count or not body or any("/" in t or "\\" in t for t in tail):
            continue
        name, columns = (tail + [""])[:2]
        return body, name or None, columns or None
    return spec, None, None


def split_specs(item: str, ncolumns: int = 3) -> list[str]:
    """A comma-separated list of ``FILE[:NAME[:COLUMNS]]`` specs -> the specs; the commas of a COLUMNS
    part (``ncolumns`` entries) stay with their spec: ``'a.tsv,b.tsv:b:2,3,1'`` -> ``['a.tsv', 'b.tsv:b:2,3,1']``."""
    tokens, specs, i = item.split(","), [], 0
    while i < len(tokens):
        take = ncolumns if parse_spec(tokens[i])[2] is not None else 1
        specs.append(",".join(tokens[i:i + take]))
        i += take
    return [spec for spec in specs if spec]


def parse_columns(value: str | Sequence[Column] | None, count: int, what: str) -> tuple[Column, ...] | None:
    """``'sentence1,sentence2,label'`` -> names, ``'0,1,2'`` -> 0-based indices, None -> None."""
    if value is None or value == "":
        return None
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    if len(parts) != count or any(p == "" for p in parts):
        raise SentEvalError(f"{what} {value!r} must list {count} columns separated by commas, by name or 0-based index")
    if all(isinstance(p, int) or str(p).isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    if any(isinstance(p, int) or str(p).isdigit() for p in parts):
        raise SentEvalError(f"{what} {value!r} mixes names and indices; give all names or all 0-based indices")
    return tuple(str(p) for p in parts)


def metric_name(name: str) -> str:
    """A task name as a metric key: lower case, runs of characters outside [a-z0-9_] become ``_``."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if not cleaned:
        raise SentEvalError(f"task name {name!r} has no ASCII letter or digit to build a metric name from; "
                            "give one after the file, as FILE:NAME")
    return cleaned


# ---------------------------------------------------------------------------------------------------
# Reading tables

DECIMAL_COMMA = re.compile(r"\s*[+-]?\d+,\d+\s*")


def _is_number(value: str) -> bool:
    """A finite float (``nan`` and ``inf`` are not scores)."""
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _looks_numeric(value: str) -> bool:
    """Meant as a number, though maybe not a usable one: any float spelling (``nan``, ``inf`` too) or a
    decimal comma (``3,5``). Such a first-row cell is data with a bad value, never a column name."""
    try:
        float(value)
    except ValueError:
        return DECIMAL_COMMA.fullmatch(value) is not None
    return True


def _not_a_number(value: str) -> str:
    """Why a score cell is refused, with the fix."""
    if DECIMAL_COMMA.fullmatch(value):
        return f"{value!r} uses a decimal comma; write {value.strip().replace(',', '.')}"
    if _looks_numeric(value):
        return f"{value!r} is not a finite number; give every pair a score or drop the pair"
    return f"{value!r}, not a number"


def _json_cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def read_table(path: str | Path) -> tuple[str, list[Row], list[str] | None]:
    """(format, rows, jsonl keys or None) of a file; blank lines are skipped, text is kept verbatim.

    Parsed by :mod:`senteval.tables` (strict: a CSV quote left open or spanning lines, a lone carriage return,
    bytes that are not UTF-8 are errors naming the file and line); a row with more or fewer cells than the
    first row is an error too, never rows merged or cells dropped without a word.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SentEvalError(f"{path}: unknown file extension {path.suffix or '(none)'!r}; "
                            f"use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise SentEvalError(f"{path}: no such file")
    try:
        text = decode_utf8(path.read_bytes())
    except TableError as err:
        raise SentEvalError(f"{path}:{err.line}: not UTF-8: {err.message}") from None
    keys, rows = None, []
    try:
        if fmt == "csv":
            rows = list(csv_rows(text))
        elif fmt == "tsv":
            rows = list(tsv_rows(text_lines(text)))
        else:
            for n, obj in json_lines(text_lines(text)):
                if not isinstance(obj, dict):
                    raise SentEvalError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}")
                rows.append((n, obj))  # cells looked up by key in _cells()
            keys = list(rows[0][1]) if rows else []
    except TableError as err:
        raise SentEvalError(f"{path}:{err.line}: {err.message}") from None
    if not rows:
        raise SentEvalError(f"{path}: the file is empty (no non-blank line)")
    if fmt != "jsonl":
        width, separator = len(rows[0][1]), "tab" if fmt == "tsv" else "comma"
        for lineno, cells in rows:
            if len(cells) != width:
                raise SentEvalError(
                    f"{path}:{lineno}: {len(cells)} cell(s), expected {width} as on line {rows[0][0]}; "
                    f"a {'missing' if len(cells) < width else 'stray'} {separator}"
                    + (" (quote cells that hold commas)?" if fmt == "csv" else "? is the separator right?"))
    return fmt, rows, keys


def _find(header: list[str], name: str) -> int | None:
    """Index of column ``name`` in a header row: exact match first, then case-insensitive."""
    cells = [c.strip() for c in header]
    if name in cells:
        return cells.index(name)
    lowered = [c.lower() for c in cells]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def _known(header: list[str], groups: Sequence[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The first group of column names that the header holds entirely."""
    for group in groups:
        if all(_find(header, name) is not None for name in group):
            return group
    return None


def _resolve(
    path: Path,
    fmt: str,
    rows: list[Row],
    keys: list[str] | None,
    columns: tuple[Column, ...] | None,
    roles: tuple[str, ...],
    known: tuple[Sequence[tuple[str, ...]], ...],
    flag: str,
) -> tuple[list[Column], list[Row], list[str], str]:
    """Decide the header and the columns: (column per role, data rows, column label per role for messages,
    the decision in words, which is also logged).

    roles: what each column holds (the last one is the score / label); known: per role-group, the
    header names recognised when columns are not given.
    """
    label_role = len(roles) - 1
    if fmt == "jsonl":
        if columns is not None and any(isinstance(c, int) for c in columns):
            raise SentEvalError(f"{path}: jsonl rows are objects; name the keys in {flag} instead of indices")
        if columns is None:
            names = [group for groups in known if (group := _known(keys, groups)) is not None]
            if len(names) != len(known):
                raise SentEvalError(f"{path}: cannot find the {', '.join(roles)} keys among {keys}; "
                                    f"name them with {flag}")
            columns = tuple(keys[_find(keys, n)] for group in names for n in group)
        return list(columns), rows, [f"key {c!r}" for c in columns], f"keys {list(columns)}"

    first_line, first = rows[0]
    if columns is not None and isinstance(columns[0], str):
        found = [_find(first, name) for name in columns]
        missing = [name for name, i in zip(columns, found) if i is None]
        if missing:
            raise SentEvalError(f"{path}: no column named {', '.join(map(repr, missing))} in the header row "
                                f"{[c.strip() for c in first]}; fix {flag} or the header")
        described = [f"column {first[i].strip()!r}" for i in found]
        return found, rows[1:], described, f"line {first_line} is a header (columns named by {flag}): {found}"

    if columns is None:
        groups = [_known(first, g) for g in known]
        if all(g is not None for g in groups):
            found = [_find(first, name) for group in groups for name in group]
            described = [f"column {first[i].strip()!r}" for i in found]
            return found, rows[1:], described, f"line {first_line} is a header naming the columns: {found}"
        if len(first) != len(roles):
            raise SentEvalError(
                f"{path}: cannot tell which columns hold the {', '.join(roles)}: the first row has {len(first)} "
                f"columns and is not a header naming them; give them with {flag} (names or 0-based indices)")
        columns = tuple(range(len(roles)))

    label_col = columns[label_role]
    if label_col >= len(first):
        raise SentEvalError(f"{path}: {flag} names column {label_col} for the {roles[label_role]}, but the rows "
                            f"have {len(first)} cells (0-based indices 0..{len(first) - 1})")
    # The rule: the first row is a header when its label cell is not meant as a number while the later rows'
    # are (a majority of them: a stray bad value further down is then an error on its own line, not a reason
    # to read the header as data). A first-row 'nan' or '3,5' is meant as a number: data, with a bad value.
    later = [_looks_numeric(cells[label_col]) for _, cells in rows[1:]]
    is_header = not _looks_numeric(first[label_col]) and 2 * sum(later) > len(later) > 0
    data = rows[1:] if is_header else rows
    described = [f"column {c}" + (f" ({first[c].strip()!r})" if is_header else "") for c in columns]
    if is_header:
        decision = (f"line {first_line} is a header: its {roles[label_role]} cell {first[label_col]!r} (column "
                    f"{label_col}) is not a number and the later rows' are")
    else:
        decision = f"no header: line {first_line} is data; columns {list(columns)}"
    return list(columns), data, described, decision


def _cells(path: Path, row: Row, columns: list[Column], described: list[str]) -> list[str]:
    lineno, cells = row
    if isinstance(cells, dict):
        missing = [c for c in columns if c not in cells]
        if missing:
            raise SentEvalError(f"{path}:{lineno}: the object has no key {missing[0]!r} (keys: {list(cells)})")
        return [_json_cell(cells[c]) for c in columns]
    needed = max(columns) + 1
    if len(cells) < needed:
        raise SentEvalError(f"{path}:{lineno}: {len(cells)} cell(s), but {described[columns.index(max(columns))]} "
                            f"is needed; is the separator right for a {path.suffix} file?")
    return [cells[c] for c in columns]


def read_pairs(
    path: str | Path, columns: str | Sequence[Column] | None = None, flag: str = "the columns"
) -> tuple[list[str], list[str], np.ndarray, str]:
    """(sentences 1, sentences 2, gold scores, the header decision) of a pair file; see the module
    docstring for the layout."""
    path = Path(path)
    fmt, rows, keys = read_table(path)
    columns = parse_columns(columns, 3, flag)
    roles = ("first sentence", "second sentence", "score")
    cols, data, described, decision = _resolve(path, fmt, rows, keys, columns, roles,
                                               (PAIR_COLUMN_NAMES, [(n,) for n in SCORE_COLUMN_NAMES]), flag)
    logger.info("%s: %s", path, decision)
    sent_a, sent_b, gold = [], [], []
    for row in data:
        a, b, score = _cells(path, row, cols, described)
        if not _is_number(score):
            raise SentEvalError(f"{path}:{row[0]}: the score {described[2]} holds {_not_a_number(score)}; "
                                f"it must be all numbers (a float score or a 0/1 label) [{decision}]")
        sent_a.append(a)
        sent_b.append(b)
        gold.append(float(score))
    if len(gold) < 2:
        raise SentEvalError(f"{path}: {len(gold)} scored pair(s); a correlation needs at least 2 [{decision}]")
    gold_arr = np.asarray(gold, dtype=np.float64)
    if np.all(gold_arr == gold_arr[0]):
        raise SentEvalError(f"{path}: every pair has the score {gold[0]:g}; a correlation needs varying scores")
    return sent_a, sent_b, gold_arr, decision


def read_labelled(
    path: str | Path, columns: str | Sequence[Column] | None = None, flag: str = "the columns",
    is_train: bool = False,
) -> tuple[list[str], list[str], list[int], str]:
    """(texts, raw labels, line numbers, the header decision) of a labelled file; the labels are still
    strings.

    is_train: also refuse a first data row whose label occurs nowhere else in the file, the mark of a
    header row that was not recognised (its label cell would become a class of one example).
    """
    path = Path(path)
    fmt, rows, keys = read_table(path)
    columns = parse_columns(columns, 2, flag)
    cols, data, described, decision = _resolve(
        path, fmt, rows, keys, columns, ("text", "label"),
        ([(n,) for n in TEXT_COLUMN_NAMES], [(n,) for n in LABEL_COLUMN_NAMES]), flag)
    logger.info("%s: %s", path, decision)
    texts, labels, lines = [], [], []
    for row in data:
        text, label = _cells(path, row, cols, described)
        texts.append(text)
        labels.append(label.strip())
        lines.append(row[0])
    if not texts:
        raise SentEvalError(f"{path}: no data rows after the header")
    if is_train and fmt != "jsonl" and data is rows and len(labels) > 2 and labels.count(labels[0]) == 1:
        raise SentEvalError(f"{path}:{lines[0]}: the label {labels[0]!r} occurs only on this first line; if the "
                            f"line is a header, name the text and label columns with {flag}, else add examples")
    return texts, labels, lines, decision


def _label_kind(path: Path, labels: list[str], lines: list[int], what: str) -> str:
    """'number' or 'string'; a mix is an error naming one of each."""
    numeric = [_is_number(v) for v in labels]
    if all(numeric):
        return "number"
    if not any(numeric):
        return "string"
    n, s = numeric.index(True), numeric.index(False)
    raise SentEvalError(f"{path}: the label {what} mixes numbers and strings ({labels[n]!r} on line {lines[n]}, "
                        f"{labels[s]!r} on line {lines[s]}); use one kind of label (a stray header row?)")


# ---------------------------------------------------------------------------------------------------
# Tasks


class CustomSTSEval(STSEval):
    """A pair file scored like the built-in STS tasks (one subset); ``run`` returns
    ``{"spearman", "pearson", "nsamples", "file"}`` with correlations in [-1, 1]. ``layout`` says how the
    file was read (header or not, which columns)."""

    def __init__(self, path: str | Path, name: str | None = None,
                 columns: str | Sequence[Column] | None = None, seed: int = 1111, flag: str = "the columns"):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.columns = columns
        self.flag = flag
        super().__init__(self.path, seed=seed)  # STSEval calls load() with this path

    def load(self, path: Path) -> None:
        sent_a, sent_b, gold, self.layout = read_pairs(path, self.columns, self.flag)
        self.data[SUBSET] = ([[s] for s in sent_a], [[s] for s in sent_b], gold)

    def run(self, params: Params, batcher) -> dict:
        result = super().run(params, batcher)[SUBSET]
        return {**result, "file": str(self.path)}


def default_classification_name(train: str | Path) -> str:
    """'data/reviews-train.tsv' -> 'reviews'; 'sst/train.tsv' -> 'sst' (the folder, when the stem is just 'train')."""
    path = Path(train)
    stem = re.sub(r"[-_.]?train$", "", path.stem, flags=re.IGNORECASE)
    return stem or path.resolve().parent.name or path.stem


class CustomClassificationEval:
    """A linear probe on frozen embeddings of labelled train, optional dev, and test files.

    ``run`` returns ``devacc`` (dev accuracy, or the k-fold cross-validation accuracy on train without a
    dev file), ``acc`` and ``macro_f1`` on test (all ×100, 2 decimals), the split sizes, the ``classes``
    in id order, ``selection`` ("dev" or "kfold") and the chosen ``penalty``.
    """

    def __init__(self, train: str | Path, test: str | Path, dev: str | Path | None = None, name: str | None = None,
                 columns: str | Sequence[Column] | None = None, seed: int = 1111, flag: str = "the columns"):
        self.seed = seed
        self.name = name or default_classification_name(train)
        self.files = {"train": Path(train), "dev": Path(dev) if dev else None, "test": Path(test)}
        raw = {split: read_labelled(p, columns, flag, is_train=split == "train")
               for split, p in self.files.items() if p is not None}
        self.layout = {split: r[3] for split, r in raw.items()}  # the header decision per file
        kinds = {split: _label_kind(self.files[split], r[1], r[2], "column") for split, r in raw.items()}
        if len(set(kinds.values())) > 1:
            raise SentEvalError(f"{self.files['test' if kinds['test'] != kinds['train'] else 'dev']}: the label "
                                f"column mixes numbers and strings across files (train labels are {kinds['train']}s)")
        train_labels = set(raw["train"][1])
        key = (lambda v: (float(v), v)) if kinds["train"] == "number" else str
        self.classes: list[str] = sorted(train_labels, key=key)
        if len(self.classes) < 2:
            raise SentEvalError(f"{self.files['train']}: only one class ({self.classes[0]!r}); "
                                "a classifier needs at least 2")
        ids = {label: i for i, label in enumerate(self.classes)}
        self.data: dict[str, tuple[list[list[str]], list[int]]] = {}
        for split, (texts, labels, lines, _) in raw.items():
            unseen = [(v, n) for v, n in zip(labels, lines) if v not in ids]
            if unseen:
                raise SentEvalError(f"{self.files[split]}:{unseen[0][1]}: label {unseen[0][0]!r} does not occur in "
                                    f"the train file {str(self.files['train'])!r} (classes: {self.classes})")
            self.data[split] = ([[t] for t in texts], [ids[v] for v in labels])
        self.samples = [s for texts, _ in self.data.values() for s in texts]

    def do_prepare(self, params: Params, prepare) -> object:
        return prepare(params, self.samples)

    def run(self, params: Params, batcher) -> dict:
        settings = ProbeSettings.from_params(params, nclasses=len(self.classes))
        X, y = {}, {}
        for split in self.data:
            X[split], y[split] = encode_labelled(params, batcher, *self.data[split])  # (n, dim), (n,)
        if "dev" in self.data:
            probe = SplitClassifier({"train": X["train"], "valid": X["dev"], "test": X["test"]},
                                    {"train": y["train"], "valid": y["dev"], "test": y["test"]}, settings)
        else:
            counts = np.bincount(y["train"], minlength=len(self.classes))
            if counts.max() < params.kfold:
                raise SentEvalError(f"{self.files['train']}: {params.kfold}-fold cross-validation needs a class with "
                                    f"at least {params.kfold} examples (largest: {counts.max()}); "
                                    "add data or a dev file")
            probe = KFoldClassifier((X["train"], y["train"]), (X["test"], y["test"]), settings)
        result = probe.run()
        macro_f1 = f1_score(y["test"], result.predictions, average="macro", zero_division=0)
        return {
            "devacc": result.devacc,
            "acc": result.acc,
            "macro_f1": float(round(100 * macro_f1, 2)),
            "ntrain": len(y["train"]),
            "ndev": len(y["dev"]) if "dev" in y else 0,
            "ntest": len(y["test"]),
            "classes": list(self.classes),
            "selection": "dev" if "dev" in self.data else "kfold",
            "penalty": result.penalties[0],
            "files": {split: str(p) for split, p in self.files.items() if p is not None},
        }


def evaluate(task, params: dict[str, Any] | Params | None, batcher, prepare=None) -> dict:
    """Run a custom task as ``SE(params, batcher, prepare).eval`` runs a registered one, but without a
    SentEval data directory (the task already holds its data)."""
    params = params if isinstance(params, Params) else make_params(params)
    SE._validate(params)
    params.current_task = task.name
    if prepare is not None:
        task.do_prepare(params, prepare)
    return task.run(params, batcher)
