"""Embeddings of a large text list, computed once: length-sorted batches written into a memory-mapped
``.npy`` file, resumable after a kill, reused by a later run with the same model and texts.

The folder holds ``<name>.npy`` (n, H) float32 unit rows in the texts' order and ``<name>.json``: the
fingerprint (model files, pooler, maximum length, texts) and how many length-sorted batches are done.
The progress file is rewritten only after the array is flushed, so a run killed at any point resumes at
the last recorded batch and never trusts rows it did not finish. Tokens are kept as one flat int32 array
(about 4 bytes a token), never as Python lists.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from simcse.errors import SimCSEError
from simcse.files import atomic_write_json

TOKENIZE_CHUNK = 16_384  # texts tokenized per call: bounds the tokenizer's Python lists
FLUSH_EVERY = 64  # batches between progress records


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of the texts in order (NUL-separated UTF-8)."""
    digest = hashlib.sha256()
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        digest.update("\0".join(texts[start:start + TOKENIZE_CHUNK]).encode("utf-8") + b"\0")
    return digest.hexdigest()


def model_digest(model_name_or_path: str) -> str:
    """What identifies a model's weights without reading them: a local folder's file names, sizes and
    modification times (a checkpoint trained further gets new ones); a hub id as it is."""
    path = Path(model_name_or_path)
    if not path.is_dir():
        return str(model_name_or_path)
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return hashlib.sha256(repr((str(path.resolve()), entries)).encode()).hexdigest()


def tokenize_flat(tokenizer, texts: Sequence[str], max_length: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets): every text's token ids in one int32 array, text i at tokens[offsets[i]:offsets[i+1]]."""
    kwargs = {"truncation": True, **({"max_length": max_length} if max_length is not None else {})}
    pieces, lengths = [], np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        rows = tokenizer(list(texts[start:start + TOKENIZE_CHUNK]), add_special_tokens=True, **kwargs)["input_ids"]
        lengths[start:start + len(rows)] = [len(r) for r in rows]
        pieces.append(np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(sum(map(len, rows)))))
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise SimCSEError(f"{len(empty)} text(s) give no tokens (the first: {texts[int(empty[0])]!r}); drop empty "
                          "texts before mining")
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32), offsets


EmbedFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def embed_texts(texts: Sequence[str], embed: EmbedFn, tokenizer, device, folder: str | os.PathLike, name: str,
                fingerprint: dict, batch_size: int = 64, max_length: int | None = None,
                log: Callable[[str], None] = print) -> np.ndarray:
    """(n, H) float32 unit embeddings of ``texts``, memory-mapped from ``folder/name.npy``; computed in
    length-sorted batches, resumed or reused when ``folder/name.json`` records the same fingerprint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array_path, progress_path = folder / f"{name}.npy", folder / f"{name}.json"
    fingerprint = {**fingerprint, "texts": texts_digest(texts), "count": len(texts), "max_length": max_length,
                   "batch_size": batch_size}
    done = 0
    if progress_path.is_file() and array_path.is_file():
        record = json.loads(progress_path.read_text(encoding="utf-8"))
        if record.get("fingerprint") == fingerprint:
            done = int(record["batches_done"])
            if record.get("complete"):
                log(f"{name}: reusing {len(texts):,} embeddings from {array_path}")
                return np.load(array_path, mmap_mode="r")
    tokens, offsets = tokenize_flat(tokenizer, texts, max_length)
    order = np.argsort(np.diff(offsets), kind="stable")  # shortest first: little padding per batch
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run(index: np.ndarray) -> np.ndarray:
        width = int((offsets[index + 1] - offsets[index]).max())
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):  # right padding, as the encoder pads
            piece = torch.from_numpy(tokens[offsets[i]:offsets[i + 1]].astype(np.int64))
            ids[row, :len(piece)], mask[row, :len(piece)] = piece, 1
        with torch.inference_mode():
            vectors = embed(ids.to(device), mask.to(device)).float()
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy()

    if done:
        array = np.load(array_path, mmap_mode="r+")
        log(f"{name}: resuming at batch {done:,} of {len(batches):,}")
    else:
        first = run(batches[0])
        array = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.float32, shape=(len(texts), first.shape[1]))
        array[batches[0]] = first
        done = 1
    for number in range(done, len(batches)):
        array[batches[number]] = run(batches[number])
        if (number + 1) % FLUSH_EVERY == 0:
            array.flush()
            atomic_write_json(progress_path, {"fingerprint": fingerprint, "batches_done": number + 1})
    array.flush()
    atomic_write_json(progress_path, {"fingerprint": fingerprint, "batches_done": len(batches), "complete": True})
    del array
    return np.load(array_path, mmap_mode="r")
