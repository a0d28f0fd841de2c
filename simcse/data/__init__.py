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

Modules: :mod:`~simcse.data.reading` (formats, column roles, the Arrow cache of the text),
:mod:`~simcse.data.tokenizing` (token lists, :class:`TrainingExamples`), :mod:`~simcse.data.collating`
(padding, keyed MLM masks, :class:`SimCSECollator`), :mod:`~simcse.data.sampler` (batches without
duplicates, epoch-seeded loaders), :mod:`~simcse.data.hashing` (SplitMix64, the one hash), and
:mod:`~simcse.data.prepare` (``python -m simcse.data.prepare``: training files from SentEval's data).

Imports: only the foundation (:mod:`simcse.errors`, :mod:`simcse.files`, :mod:`simcse.cli` in entry
points) and the SentEval package below it (:mod:`senteval.tables`, the one strict reader of user table files;
:mod:`senteval.datapath`); never the models, losses, evaluation or training.
"""

from simcse.data.collating import SimCSECollator, check_mlm_probability, mask_tokens, pad_sentence_features
from simcse.data.reading import (
    SCORE_COLUMN,
    SUPPORTED_EXTENSIONS,
    ColumnRoles,
    column_roles,
    load_training_dataset,
    sentence_columns,
)
from simcse.data.tokenizing import SentenceBatch, TrainingExamples, tokenize_dataset

__all__ = [
    "SCORE_COLUMN",
    "SUPPORTED_EXTENSIONS",
    "ColumnRoles",
    "SentenceBatch",
    "SimCSECollator",
    "TrainingExamples",
    "check_mlm_probability",
    "column_roles",
    "load_training_dataset",
    "mask_tokens",
    "pad_sentence_features",
    "sentence_columns",
    "tokenize_dataset",
]
