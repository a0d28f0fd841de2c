"""Training data: read the training file, tokenize it, and collate batches of sentence pairs or triplets.

The column count of the training file decides the training mode (REFERENCE §1):

* 1 column: unsupervised SimCSE. Each sentence is paired with itself; dropout makes the two views differ.
* 2 columns: (anchor, positive).
* 3 columns: (anchor, positive, hard negative).

Columns are taken by position, whatever their names. Empty cells become a single space ``" "``, so
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

The file must be UTF-8 (a leading byte-order mark is allowed). The parsed rows are written once to an
Arrow file under ``cache_dir`` (the ``datasets`` cache by default), keyed by the file's path and SHA-256,
so later runs memory-map it and ``tokenize_dataset`` can cache its result as well.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch

from simcse.errors import SimCSEError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "SimCSECollator",
    "load_training_dataset",
    "mask_tokens",
    "pad_sentence_features",
    "tokenize_dataset",
]

SUPPORTED_EXTENSIONS = (".txt", ".csv", ".json", ".jsonl")
EMPTY_CELL = " "
# The tokenizer outputs a training example carries; anything else the tokenizer returns is dropped.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
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

    See the module docstring for the formats. Raises :class:`~simcse.errors.SimCSEError` naming the file
    for a missing file, an unsupported extension, bytes that are not UTF-8 (with the line number),
    an empty or whitespace-only file, malformed rows or records (with their line or record number), and a
    column count other than 1, 2 or 3.
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
    columns = _parse(raw, path)  # validates everything before `datasets` sees the file
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    return datasets.Dataset.from_generator(
        _generate_rows,
        features=features,
        gen_kwargs={"path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest()},
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


def _generate_rows(path: str, sha256: str):
    # `sha256` only keys the `datasets` cache: an edited file gets a new Arrow file.
    columns = _parse(Path(path).read_bytes(), Path(path))
    names = list(columns)
    for values in zip(*columns.values()):
        yield dict(zip(names, values))


def _parse(raw: bytes, path: Path) -> Columns:
    text = _decode_utf8(raw, path)
    if not text.strip():
        raise SimCSEError(
            f"training file {path} is empty or holds only whitespace; it needs one sentence per line (.txt), "
            "a header row and rows (.csv), or records (.json/.jsonl)"
        )
    columns = _READERS[path.suffix.lower()](text, path)
    check_column_count(list(columns), f"training file {path}")
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
    check_column_count(header, f"training file {path}")
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
            if value is not None and not isinstance(value, str):
                raise SimCSEError(
                    f"training file {path}, {where}: field {key!r} holds {type(value).__name__} "
                    f"{_preview(value)}, not text; every field of a training record must be a sentence "
                    "(drop other fields; records nested under a key must be lifted to the top level)"
                )
            names.setdefault(key, None)
    if not names:
        raise SimCSEError(f"training file {path} has records without any text fields; {_COLUMN_RULE}")
    check_column_count(list(names), f"training file {path}")
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


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 32,
    pad_to_max_length: bool = False,
    num_proc: int | None = None,
    overwrite_cache: bool = False,
) -> datasets.Dataset:
    """Tokenize every column; each example becomes num_sent token sequences per model input.

    Output columns: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer returns
    them), each a list of num_sent sequences: num_sent = 2 for 1-column data (the sentence twice, tokenized
    once), otherwise the column count. Sequences are truncated to ``max_seq_length`` tokens (special
    tokens included) and, with ``pad_to_max_length``, padded to it; otherwise :class:`SimCSECollator` pads
    each batch. The text columns are removed. Runs through ``Dataset.map(batched=True)``, so the result is
    cached next to a file-backed dataset (``overwrite_cache=True`` recomputes it).
    """
    columns = list(dataset.column_names)
    check_column_count(columns, "the training dataset")
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise SimCSEError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
    if pad_to_max_length and tokenizer.pad_token_id is None:
        raise _no_pad_token_error(tokenizer)
    return dataset.map(
        _tokenize_batch,
        batched=True,
        num_proc=num_proc,
        remove_columns=columns,
        fn_kwargs={
            "tokenizer": tokenizer,
            "columns": columns,
            "max_length": max_seq_length,
            "padding": "max_length" if pad_to_max_length else False,
        },
        desc="Tokenizing the training data",
        load_from_cache_file=not overwrite_cache,
    )


def _tokenize_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, columns: list[str], max_length: int, padding: str | bool
) -> dict[str, list[list[list[int]]]]:
    encoded = [
        tokenizer([_cell(text) for text in batch[name]], max_length=max_length, truncation=True, padding=padding)
        for name in columns
    ]
    if len(encoded) == 1:
        encoded = encoded * 2  # unsupervised: the same tokens twice, two dropout views in the encoder
    keys = [key for key in MODEL_INPUTS if key in encoded[0]]
    # zip over the columns: per example, a list of num_sent sequences.
    return {key: [list(sentences) for sentences in zip(*(enc[key] for enc in encoded))] for key in keys}


def _no_pad_token_error(tokenizer: PreTrainedTokenizerBase) -> SimCSEError:
    return SimCSEError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has no pad token, so "
        "batches cannot be padded; for decoders such as GPT-2 set `tokenizer.pad_token = tokenizer.eos_token`"
    )


# ----- collation ------------------------------------------------------------------------------------


def pad_sentence_features(
    features: Sequence[dict[str, Any]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad features holding num_sent sequences each into (batch, num_sent, max_len) tensors.

    ``input_ids`` are padded with ``pad_token_id``, ``attention_mask`` and ``token_type_ids`` with 0; an
    ``attention_mask`` is built from the lengths when the features lack one. Other keys are dropped.
    """
    if not features:
        raise SimCSEError("cannot collate an empty list of features")
    num_sent = _num_sent(features[0], 0)
    for index, feature in enumerate(features):
        if _num_sent(feature, index) != num_sent:
            raise SimCSEError(
                f"feature {index} holds {_num_sent(feature, index)} sentences but feature 0 holds {num_sent}; "
                "every example of a batch must come from the same training file"
            )
    batch_size = len(features)
    sequences = [seq for feature in features for seq in feature["input_ids"]]  # batch * num_sent
    max_len = max(len(seq) for seq in sequences)
    if pad_to_multiple_of:
        max_len = -(-max_len // pad_to_multiple_of) * pad_to_multiple_of

    def padded(key: str, pad_value: int) -> torch.Tensor:
        rows = [seq for feature in features for seq in feature[key]]
        out = torch.full((len(rows), max_len), pad_value, dtype=torch.long)  # (batch * num_sent, max_len)
        for row, seq in enumerate(rows):
            if len(seq):
                out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        return out.view(batch_size, num_sent, max_len)  # (batch, num_sent, max_len)

    batch = {"input_ids": padded("input_ids", pad_token_id)}
    if "attention_mask" in features[0]:
        batch["attention_mask"] = padded("attention_mask", 0)
    else:
        lengths = torch.tensor([len(seq) for seq in sequences])  # (batch * num_sent,)
        mask = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)  # (batch * num_sent, max_len)
        batch["attention_mask"] = mask.long().view(batch_size, num_sent, max_len)
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = padded("token_type_ids", 0)
    return batch


def _num_sent(feature: dict[str, Any], index: int) -> int:
    ids = feature.get("input_ids")
    if ids is None or not len(ids) or not all(isinstance(seq, (list, tuple, torch.Tensor)) for seq in ids):
        raise SimCSEError(
            f"feature {index} must hold input_ids as a list of num_sent token lists (as made by "
            f"tokenize_dataset), got {type(ids).__name__}"
        )
    return len(ids)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al. 2019, arXiv:1810.04805) for the auxiliary masked-LM loss.

    Each token that is neither padding (``attention_mask`` 0) nor one of ``special_ids`` is chosen with
    probability ``mlm_probability``. Of the chosen tokens 80% become ``mask_token_id``, 10% a uniformly
    random id in [0, vocab_size), 10% stay. Returns new tensors ``(masked_ids, labels)`` shaped like
    ``input_ids``: labels hold the original id at chosen positions and -100 elsewhere. ``input_ids`` is
    not modified. Draws from ``generator`` when given, else from torch's global RNG.
    """
    specials = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, specials)

    def coin(probability: float) -> torch.Tensor:
        probs = torch.full(input_ids.shape, probability, device=input_ids.device)
        return torch.bernoulli(probs, generator=generator).bool()

    chosen = coin(mlm_probability) & eligible
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    masked_ids = input_ids.clone()
    to_mask = chosen & coin(0.8)
    masked_ids[to_mask] = mask_token_id
    to_random = chosen & ~to_mask & coin(0.5)  # half of the remaining 20%
    random_ids = torch.randint(vocab_size, (int(to_random.sum()),), generator=generator, device=input_ids.device)
    masked_ids[to_random] = random_ids.to(input_ids.dtype)
    return masked_ids, labels


@dataclass
class SimCSECollator:
    """Collate tokenized examples (each holding num_sent sequences) into a training batch.

    Returns ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when the features have them),
    each (batch, num_sent, max_len), right-padded to the longest sequence of the batch (rounded up to
    ``pad_to_multiple_of``) with the tokenizer's pad token. With ``do_mlm`` also ``mlm_input_ids`` and
    ``mlm_labels`` of the same shape, from :func:`mask_tokens` (special tokens of the tokenizer, including
    its unknown token, and padding are never chosen; ``input_ids`` is left untouched).

    ``generator`` makes masking reproducible in tests; leave it None in training, where DataLoader workers
    seed the global RNG differently (a shared generator would give every worker the same masks).
    """

    tokenizer: PreTrainedTokenizerBase
    do_mlm: bool = False
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.tokenizer.pad_token_id is None:
            raise _no_pad_token_error(self.tokenizer)
        if self.pad_to_multiple_of is not None and (
            not isinstance(self.pad_to_multiple_of, int) or self.pad_to_multiple_of < 1
        ):
            raise SimCSEError(f"pad_to_multiple_of must be a positive integer or None, got {self.pad_to_multiple_of!r}")
        if self.do_mlm:
            if not 0 < self.mlm_probability <= 1:
                raise SimCSEError(f"mlm_probability must be in (0, 1], got {self.mlm_probability!r}")
            if self.tokenizer.mask_token_id is None:
                raise SimCSEError(
                    f"--do_mlm needs a tokenizer with a mask token, and {self.tokenizer.name_or_path!r} has "
                    "none (decoders such as GPT-2 are not trained with masked LM); drop --do_mlm"
                )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_sentence_features(features, self.tokenizer.pad_token_id, self.pad_to_multiple_of)
        if self.do_mlm:
            batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(
                batch["input_ids"],
                batch["attention_mask"],
                mask_token_id=self.tokenizer.mask_token_id,
                vocab_size=len(self.tokenizer),
                special_ids=self.tokenizer.all_special_ids,
                mlm_probability=self.mlm_probability,
                generator=self.generator,
            )
        return batch
