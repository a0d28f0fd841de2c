"""What the tool accepts as sentences: a string, a list, a numpy string array, a pandas Series, or (for
an index) a UTF-8 text file of one sentence per line; anything else is a one-line error.

Imports: the foundation only.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from simcse.errors import SimCSEError


def is_text_array(value) -> bool:
    """A numpy array of strings, or a pandas Series / Index (of anything: its items are checked later)."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "USO"
    return type(value).__module__.startswith("pandas") and hasattr(value, "tolist") and not hasattr(value, "columns")


def as_sentence_list(sentences, what: str) -> tuple[list[str], bool]:
    """(list of sentences, whether a single string was given) from a string, a list / tuple, a numpy
    string array or a pandas Series; rejects empty inputs, numeric arrays and non-strings."""
    if isinstance(sentences, str):
        return [sentences], True
    if hasattr(sentences, "columns"):
        raise SimCSEError(f"{what} is a table ({type(sentences).__name__}); pass one column, e.g. frame['text']")
    if isinstance(sentences, (np.ndarray, torch.Tensor)) and not is_text_array(sentences):
        raise SimCSEError(f"{what} must be a string or a list of strings, got a numeric array; pass the sentences")
    if isinstance(sentences, np.ndarray) and sentences.ndim != 1:
        raise SimCSEError(f"{what} must be one-dimensional, got a string array shaped {sentences.shape}")
    items = sentences.tolist() if is_text_array(sentences) else list(sentences)
    if not items:
        raise SimCSEError(f"{what} is empty; pass at least one sentence")
    bad = next((i for i, s in enumerate(items) if not isinstance(s, str)), None)
    if bad is not None:
        raise SimCSEError(f"{what}[{bad}] is {type(items[bad]).__name__} {items[bad]!r}, not a string")
    return items, False


def read_sentences(sentences_or_file) -> list[str]:
    """The sentences as given (see :func:`as_sentence_list`), or the non-empty lines of a UTF-8 text file
    (one sentence a line; a byte-order mark is dropped)."""
    if isinstance(sentences_or_file, (str, os.PathLike)):
        path = os.fspath(sentences_or_file)
        if not os.path.isfile(path):
            raise SimCSEError(
                f"{path!r} is not a file; pass a list of sentences, or the path of a text file with one per line"
            )
        with open(path, encoding="utf-8-sig") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
        sentences = [line for line in lines if line.strip()]
        if not sentences:
            raise SimCSEError(f"{path!r} holds no sentences (every line is empty)")
        return sentences
    return as_sentence_list(sentences_or_file, "sentences")[0]
