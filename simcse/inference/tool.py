"""The sentence-embedding tool: encode, compare and search sentences with a trained model (the interface
of princeton-nlp/SimCSE ``simcse/tool.py``).

    >>> from simcse import SimCSE
    >>> model = SimCSE("result/my-sup-simcse")               # a train.py checkpoint, converted or not
    >>> model.similarity("A man plays a guitar.", ["A person plays music.", "Stocks fell."])
    >>> model.build_index(["A person plays music.", "Stocks fell."])
    >>> model.search("A man plays a guitar.", top_k=3)   # [{"corpus_id": 0, "score": .., "sentence": ..}, ..]

Which pooler (the rule; the model's *name* is never looked at, unlike the 2021 tool, which picked
``cls_before_pooler`` when the path contained "unsup"):

1. ``pooler=...`` given: used as it is (it must fit the architecture).
2. The checkpoint's ``config.json`` holds ``pooler_type`` (every train.py checkpoint, and its conversion
   by ``simcse_to_huggingface.py``): the pooler used at evaluation, i.e. ``pooler_type``, except that
   ``cls`` with ``mlp_only_train`` becomes ``cls_before_pooler`` (the MLP head was for training only).
3. A sentence-transformers directory (``modules.json``) whose pipeline is Transformer + Pooling
   (+ Normalize): its pooling mode (cls -> ``cls_before_pooler``, mean -> ``avg``, weightedmean ->
   ``wavg``, lasttoken -> ``last``). Any other module in the pipeline (Dense, ...) is an error, because
   the tool would silently drop it.
4. Otherwise ``cls`` when the checkpoint's weights include a trained pooling layer (``pooler.dense``;
   right for supervised SimCSE models published as plain BERT/RoBERTa), with a warning that says how to
   choose another; when there is no trained pooling layer it is an error asking for ``pooler=``.

``tool.pooler`` and ``tool.pooler_source`` ("argument", "config", "sentence-transformers", "default")
say what was chosen.

Search is exact cosine (:mod:`simcse.search`, the interface of sentence-transformers'
``semantic_search``): hits are ``{"corpus_id", "score", "sentence"}``, best first, ties by corpus id
ascending, ``threshold=None`` by default; ``SimCSE(..., original_search=True)`` answers as the 2021 tool did
(``(sentence, score)`` tuples, ``threshold=0.6``). With faiss installed (``pip install faiss-cpu``) candidates
come from a ``faiss.IndexFlatIP`` (widened by a range search where the top k cuts through a tie),
otherwise from a chunked scan that never copies the index; every candidate is re-scored by one
float64 function, so both backends return identical results. The index holds each distinct sentence
once; ``save_index`` / ``load_index`` keep it in one ``.npz`` file.

Lengths: sentences are truncated at the model's usable positions (:func:`simcse.modeling.encoder.position_limit`:
512 for BERT and for RoBERTa, whose table has 514 rows) unless ``max_length`` says fewer.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.files import atomic_file
from simcse.inference.inputs import as_sentence_list, read_sentences
from simcse.modeling.checkpoint import resolve_pooler
from simcse.modeling.encoder import (
    SentenceEncoder,
    build_encoder,
    check_max_length,
    load_pretrained,
    position_limit,
    resolve_device,
)
from simcse.modeling.poolers import check_pooler
from simcse.search import as_matrix, faiss_candidates, scan_candidates, search_candidates

INDEX_FORMAT = 1  # version of the save_index file
ORIGINAL_SEARCH_THRESHOLD = 0.6  # princeton-nlp/SimCSE simcse/tool.py search()'s default


def _import_faiss(use_faiss: bool | None):
    if use_faiss is False:
        return None
    try:
        import faiss
    except ImportError:
        if use_faiss:
            raise SimCSEError("use_faiss=True but faiss is not installed; pip install faiss-cpu, "
                              "or pass use_faiss=None to fall back to exact torch search") from None
        return None
    return faiss


class SimCSE:
    """Encode sentences, score pairs and search an index with a SimCSE (or any HF) encoder.

    model_name_or_path: a train.py checkpoint, its conversion, or any BERT/RoBERTa/GPT-2 model (local
    directory or hub id). device: "cpu", "cuda", "cuda:N" (default: cuda when available). pooler: see
    the module docstring for the rule used when it is None. truncate_dim: use only the first D coordinates
    of every embedding (for a Matryoshka-trained model, ``train.py --matryoshka_dims``; the same as
    ``evaluation.py --truncate_dim D``): encode, similarity and the index then work on D-wide vectors.
    """

    def __init__(self, model_name_or_path: str, device: str | None = None, pooler: str | None = None,
                 truncate_dim: int | None = None, original_search: bool = False):
        """original_search: :meth:`search` answers as princeton-nlp/SimCSE's tool did: ``(sentence, score)``
        tuples, best first, ``threshold=0.6`` and ``top_k=5`` by default (for code written for the 2021
        tool; the default answers as sentence-transformers' ``semantic_search``)."""
        from transformers import AutoConfig

        config = load_pretrained(model_name_or_path, AutoConfig.from_pretrained)
        self.pooler, self.pooler_source = resolve_pooler(model_name_or_path, config, pooler)
        check_pooler(self.pooler, config.model_type, origin=f"pooler from {self.pooler_source}")
        # truncate_dim: keep the first D coordinates (a Matryoshka-trained model, arXiv:2205.13147); an index
        # built by this tool then holds D-wide vectors, and cosines are those of the prefixes.
        built = build_encoder(model_name_or_path, self.pooler, device=device, truncate_dim=truncate_dim)
        self.truncate_dim = truncate_dim
        self.model_name_or_path = model_name_or_path
        self.tokenizer = built.tokenizer
        self.device = built.device
        self._model = built.model
        self._embed = built.embed
        self._max_positions = position_limit(config)
        self._index_sentences: list[str] = []
        self._index_rows: dict[str, int] = {}
        self._index_vectors: np.ndarray | None = None  # (N, H) unit rows, float32
        self._faiss_module = None  # the faiss module when the index uses it
        self._faiss_index = None
        self._index_built = False
        self.original_search = bool(original_search)
        # instruction prefixes a train.py run was given (--query_prompt / --document_prompt): queries and
        # indexed sentences get them, as during training; encode(..., prompt_name=) applies one by name
        self.prompts: dict[str, str] = dict(getattr(config, "simcse_prompts", None) or {})

    def __repr__(self) -> str:
        dim = "" if self.truncate_dim is None else f", truncate_dim={self.truncate_dim}"
        return (f"SimCSE({self.model_name_or_path!r}, pooler={self.pooler!r} from {self.pooler_source}{dim}, "
                f"device={str(self.device)!r}, indexed={self.index_size})")

    # ---------------------------------------------------------------- encoding

    def encode(
        self,
        sentences,
        batch_size: int = 64,
        max_length: int | None = None,
        normalize_to_unit: bool = True,
        return_numpy: bool = False,
        show_progress_bar: bool = False,
        convert_to_numpy: bool | None = None,
        convert_to_tensor: bool | None = None,
        device: str | None = None,
        prompt_name: str | None = None,
    ) -> torch.Tensor | np.ndarray:
        """Sentence vectors: (n, H) for a list (or numpy string array, or pandas Series), (H,) for a single
        string; float32 on the CPU: a torch tensor, or a numpy array with ``return_numpy`` (alias
        ``convert_to_numpy``, the sentence-transformers name; ``convert_to_tensor=True`` asks for the
        tensor). ``device``: run on this device from now on (the model moves there and stays, as
        sentence-transformers' ``encode(device=...)`` does).

        No caching (a long-lived tool would grow without bound) and no gradient. Sentences longer than
        ``max_length`` tokens (default: the model's usable positions) are truncated. An empty string is
        embedded as a sentence of special tokens only ([CLS] [SEP] for BERT); with a tokenizer that adds
        none (GPT-2) it is an error, since there is nothing to embed. ``prompt_name`` ("query" or
        "document"): put the checkpoint's prompt of that name before each sentence (none when it has none).
        """
        items, single = as_sentence_list(sentences, "sentences")
        if prompt_name is not None:
            if prompt_name not in ("query", "document"):
                raise SimCSEError(f"prompt_name must be 'query' or 'document', got {prompt_name!r}")
            items = [self.prompts.get(prompt_name, "") + item for item in items]
        if batch_size < 1:
            raise SimCSEError(f"batch_size must be positive, got {batch_size}")
        as_numpy = bool(return_numpy or convert_to_numpy)
        if as_numpy and convert_to_tensor:
            raise SimCSEError("convert_to_tensor=True and convert_to_numpy/return_numpy=True ask for two output "
                              "types; pass one of them")
        if device is not None:
            target = resolve_device(device)
            if target != self.device:
                self._model.to(target)
                self.device = target
        max_length = check_max_length(max_length, self._max_positions, name="`max_length`")
        encoder = SentenceEncoder(self._embed, self.tokenizer, self.device, batch_size=batch_size,
                                  max_length=max_length, cache=False, show_progress=show_progress_bar)
        vectors = encoder.encode(items)  # (n, H)
        if normalize_to_unit:
            vectors = F.normalize(vectors, dim=-1)
        if single:
            vectors = vectors[0]  # (H,)
        return vectors.numpy() if as_numpy else vectors

    @staticmethod
    def _is_vectors(value) -> bool:
        return isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray) and value.dtype.kind in "fiu")

    def _unit_vectors(self, value, what: str, batch_size: int = 64, max_length: int | None = None,
                      prompt_name: str | None = None) -> tuple[torch.Tensor, bool]:
        """(m, H) unit rows from sentences or precomputed vectors, and whether a single item was given."""
        if self._is_vectors(value):
            tensor = torch.as_tensor(value, dtype=torch.float32).cpu()
            if tensor.dim() not in (1, 2) or tensor.shape[-1] == 0 or tensor.numel() == 0:
                raise SimCSEError(f"{what} vectors must be shaped (H,) or (m, H), got {tuple(tensor.shape)}")
            single = tensor.dim() == 1
            return F.normalize(tensor.reshape(-1, tensor.shape[-1]), dim=-1), single
        items, single = as_sentence_list(value, what)
        return self.encode(items, batch_size=batch_size, max_length=max_length, prompt_name=prompt_name), single

    def similarity(self, queries, keys) -> float | np.ndarray:
        """Cosine similarity. Each side is a string, a list of strings (numpy / pandas too) or precomputed
        vectors ((H,) or (m, H)). str/str -> float; list/list -> (n, m) array; a single string on one side
        drops that axis."""
        q, single_q = self._unit_vectors(queries, "queries")  # (n, H)
        k, single_k = self._unit_vectors(keys, "keys")  # (m, H)
        if q.shape[1] != k.shape[1]:
            raise SimCSEError(f"queries have {q.shape[1]} dimensions but keys have {k.shape[1]}")
        scores = (q @ k.T).numpy()  # (n, m)
        if single_q and single_k:
            return float(scores[0, 0])
        if single_q:
            return scores[0]
        if single_k:
            return scores[:, 0]
        return scores

    # ---------------------------------------------------------------- index and search

    @property
    def index_size(self) -> int:
        return len(self._index_sentences)

    @property
    def uses_faiss(self) -> bool:
        return self._faiss_index is not None

    def _index_rows_for(self, sentences: list[str], embeddings, batch_size: int, max_length: int | None,
                        known: dict[str, int]) -> tuple[list[str], np.ndarray]:
        """(new distinct sentences, their (k, H) float32 unit rows): encoded, or taken from ``embeddings``
        (one row per given sentence; the first row of a repeated sentence is kept)."""
        first = {s: i for i, s in reversed(list(enumerate(sentences)))}  # sentence -> first position
        new = [s for s in dict.fromkeys(sentences) if s not in known]
        if embeddings is None:
            vectors = self.encode(new, batch_size=batch_size, max_length=max_length,
                                  prompt_name="document").numpy() if new else None
        else:
            given = as_matrix(embeddings, "embeddings")
            if given.shape[0] != len(sentences):
                raise SimCSEError(f"embeddings has {given.shape[0]} rows for {len(sentences)} sentences; "
                                  "give one row per sentence")
            vectors = given[[first[s] for s in new]]  # a fresh copy, normalised in place
            vectors /= np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors)), 1e-12)[:, None]
        width = None if self._index_vectors is None or not known else self._index_vectors.shape[1]
        if vectors is not None and width is not None and vectors.shape[1] != width:
            raise SimCSEError(f"the new vectors have {vectors.shape[1]} dimensions but the index has {width}")
        return new, (np.ascontiguousarray(vectors, dtype=np.float32) if vectors is not None else None)

    def _install(self, sentences: list[str], vectors: np.ndarray, faiss) -> None:
        """Make these the index, all at once (nothing is changed if building the faiss index fails)."""
        faiss_index = None
        if faiss is not None:
            faiss_index = faiss.IndexFlatIP(vectors.shape[1])
            faiss_index.add(vectors)
        self._index_sentences = list(sentences)
        self._index_rows = {s: i for i, s in enumerate(sentences)}
        self._index_vectors = vectors
        self._faiss_module, self._faiss_index = faiss, faiss_index
        self._index_built = True

    def build_index(self, sentences_or_file, use_faiss: bool | None = None, batch_size: int = 64,
                    max_length: int | None = None, embeddings=None) -> int:
        """Replace the index with these sentences (a list, numpy string array, pandas Series, or a text file
        with one per line). ``embeddings``: their precomputed vectors, one row per sentence, instead of
        encoding them. The current index is replaced only once the new one is complete: bad input or a
        failed encoding leaves it as it was.

        use_faiss: None = faiss when importable, True = faiss or an error, False = the exact scan only.
        Returns the number of distinct sentences indexed.
        """
        sentences = read_sentences(sentences_or_file)
        faiss = _import_faiss(use_faiss)
        new, vectors = self._index_rows_for(sentences, embeddings, batch_size, max_length, known={})
        self._install(new, vectors, faiss)
        return self.index_size

    def add_to_index(self, sentences_or_file, batch_size: int = 64, max_length: int | None = None,
                     embeddings=None) -> int:
        """Add sentences (as for :meth:`build_index`) to the index; sentences already indexed are skipped.
        Builds the index (faiss when importable) if there is none. Returns the new index size."""
        sentences = read_sentences(sentences_or_file)
        if not self._index_built:
            return self.build_index(sentences, batch_size=batch_size, max_length=max_length, embeddings=embeddings)
        new, vectors = self._index_rows_for(sentences, embeddings, batch_size, max_length, known=self._index_rows)
        if new:
            if self._faiss_index is not None:
                self._faiss_index.add(vectors)
            self._index_vectors = np.concatenate([self._index_vectors, vectors])
            for sentence in new:
                self._index_rows[sentence] = len(self._index_sentences)
                self._index_sentences.append(sentence)
        return self.index_size

    def search(self, queries, threshold: float | None = None, top_k: int = 5, batch_size: int = 64,
               max_length: int | None = None) -> list:
        """The indexed sentences most similar to each query, as sentence-transformers' ``semantic_search``
        answers: ``[{"corpus_id": int, "score": float, "sentence": str}, ...]``, best first (ties: the
        smaller corpus id, i.e. the earlier indexed sentence, first), at most ``top_k``, and only scores >=
        ``threshold`` when one is given. One such list for a single query (a string or an (H,) vector), a
        list of them for several (a list / numpy / pandas of strings, or (n, H) precomputed embeddings).
        With ``original_search`` (see the constructor): ``(sentence, score)`` tuples, ``threshold`` 0.6
        unless given."""
        if threshold is None and self.original_search:
            threshold = ORIGINAL_SEARCH_THRESHOLD
        if self._index_vectors is None or self.index_size == 0:
            raise SimCSEError("the index is empty; call build_index(sentences_or_file) before search()")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise SimCSEError(f"top_k must be at least 1, got {top_k!r}")
        q, single = self._unit_vectors(queries, "queries", batch_size, max_length, "query")  # (n, H)
        q = as_matrix(q, "queries")
        if q.shape[1] != self._index_vectors.shape[1]:
            raise SimCSEError(f"queries have {q.shape[1]} dimensions but the index has {self._index_vectors.shape[1]}")
        if self._faiss_index is not None:
            candidates = faiss_candidates(self._faiss_index, q, top_k, self.index_size)
        else:
            candidates = scan_candidates(q, self._index_vectors, top_k)
        results = search_candidates(q, self._index_vectors, candidates, top_k, threshold)
        for hits in results:
            for hit in hits:
                hit["sentence"] = self._index_sentences[hit["corpus_id"]]
        if self.original_search:  # the 2021 tool's answer: (sentence, score) tuples
            results = [[(hit["sentence"], hit["score"]) for hit in hits] for hits in results]
        return results[0] if single else results

    # ---------------------------------------------------------------- saving the index

    def save_index(self, path: str | os.PathLike) -> str:
        """Write the index (sentences, unit vectors, model and pooler) to one ``.npz`` file, atomically:
        a reader sees the old file or the new one, never a part. Returns the path written."""
        if not self._index_built or self.index_size == 0:
            raise SimCSEError("the index is empty; build_index(...) before save_index()")
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise SimCSEError(f"save_index({path!r}): give a file name ending in .npz")
        meta = {"format": INDEX_FORMAT, "model": self.model_name_or_path, "pooler": self.pooler,
                "size": self.index_size, "dim": int(self._index_vectors.shape[1])}
        with atomic_file(path) as out:
            np.savez(out, vectors=self._index_vectors, sentences=np.array(self._index_sentences, dtype=str),
                     meta=np.array(json.dumps(meta)))
        return path

    def load_index(self, path: str | os.PathLike, use_faiss: bool | None = None) -> int:
        """Replace the index with one written by :meth:`save_index` (checked against this tool's pooler
        and width first; the current index stays on any error). Returns the index size."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise SimCSEError(f"{path!r} is not a file; give a .npz written by save_index()")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
                sentences = [str(s) for s in data["sentences"]]
        except (OSError, ValueError, KeyError) as err:
            raise SimCSEError(f"{path!r} is not an index written by save_index() ({err})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise SimCSEError(f"{path!r} has index format {meta.get('format')!r}; this version reads {INDEX_FORMAT}")
        if meta.get("pooler") != self.pooler:
            raise SimCSEError(f"{path!r} was built with pooler {meta.get('pooler')!r} (model {meta.get('model')!r}), "
                              f"this tool uses {self.pooler!r}; its vectors would not match the queries")
        if len(sentences) != len(vectors) or len(set(sentences)) != len(sentences):
            raise SimCSEError(f"{path!r}: {len(sentences)} sentences for {len(vectors)} vectors; the file is damaged")
        probe = self.encode("x")
        if vectors.ndim != 2 or vectors.shape[1] != probe.shape[0]:
            raise SimCSEError(f"{path!r} holds {vectors.shape[-1]}-dimensional vectors, this model gives "
                              f"{probe.shape[0]}; it was built with another model ({meta.get('model')!r})")
        self._install(sentences, vectors, _import_faiss(use_faiss))
        return self.index_size
