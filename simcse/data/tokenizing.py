"""Tokenizing the training columns once into int32 token lists (cached beside the text), and the
tokenized examples a DataLoader reads batch by batch (the second step of :mod:`simcse.data`)."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from simcse.data.reading import EMPTY_CELL, SCORE_COLUMN, ColumnRoles, _cell, column_roles, score_value
from simcse.errors import SimCSEError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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
    prompts: Sequence[str] = (),
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
    column is parsed into a float32 column ``score``. :func:`column_roles` has already refused a score cell
    that is not a finite number, naming its file line; the parse here re-checks each cell as a last guard
    (naming the data row: roles built by hand skip that check).

    ``prompts``: text put before every sentence of each sentence column, one per column (instruction
    prefixes as E5/BGE/GTE use, e.g. "query: " for the anchors and "passage: " for the others); empty: none.
    They are part of the cache key.
    """
    roles = column_roles(dataset) if roles is None else roles
    columns = list(roles.sentences)
    prompts = list(prompts) or [""] * len(columns)
    if len(prompts) != len(columns):
        raise SimCSEError(f"{len(prompts)} prompt(s) for {len(columns)} sentence column(s); give one per column")
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
        raise SimCSEError(f"max_seq_length must be a positive integer, got {max_seq_length!r}")
    _check_single_segment_types(tokenizer)
    cache_file = None
    if dataset.cache_files:
        key = {"format": _TOKEN_FORMAT, "data": dataset._fingerprint, "columns": columns, "score": roles.score,
               "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_seq_length, "empty": EMPTY_CELL}
        if any(prompts):  # keys without prompts stay as they were, so existing caches are still found
            key["prompts"] = prompts
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
        fn_kwargs={"tokenizer": tokenizer, "columns": columns, "max_length": max_seq_length, "score": roles.score,
                   "prompts": prompts},
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
                    max_length: int, score: str | None = None, prompts: Sequence[str] | None = None) -> pa.Table:
    """Tokenize a batch of rows into one ``input_ids`` column of type list<list<int32>> (and the float32
    ``score`` column parsed from column ``score`` when given), each column's prompt before its text."""
    prompts = prompts or [""] * len(columns)
    encoded = [
        tokenizer([prompt + _cell(text) for text in batch.column(name).to_pylist()], max_length=max_length,
                  truncation=True, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        for name, prompt in zip(columns, prompts)
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
    """The float32 scores of a batch; a last guard behind :func:`column_roles`, which names the file line."""
    scores = np.empty(len(cells), dtype=np.float32)
    for k, cell in enumerate(cells):
        value = score_value(cell)
        if value is None:
            raise SimCSEError(f"training data row {indices[k] + 1}: the {name!r} column holds {cell!r}, not a "
                              "finite number; every row of graded pairs needs a similarity score")
        scores[k] = value
    return scores


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


