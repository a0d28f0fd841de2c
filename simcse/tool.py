"""The sentence-embedding tool: encode, compare and search sentences with a trained model (REFERENCE §7).

    >>> from simcse import SimCSE
    >>> model = SimCSE("result/my-sup-simcse")               # a train.py checkpoint, converted or not
    >>> model.similarity("A man plays a guitar.", ["A person plays music.", "Stocks fell."])
    >>> model.build_index(["A person plays music.", "Stocks fell."])
    >>> model.search("A man plays a guitar.", threshold=0.5, top_k=3)

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

Search is exact inner product over unit vectors (cosine). With faiss installed (``pip install
faiss-cpu``) candidates come from a ``faiss.IndexFlatIP``, otherwise from a torch matrix product; in
both cases the candidates are re-scored by one float64 function and sorted by (score desc, insertion
order), so the two backends return identical results. The index holds each distinct sentence once.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from simcse.encoder import SentenceEncoder, build_encoder, load_pretrained
from simcse.errors import SimCSEError
from simcse.poolers import check_pooler

# sentence-transformers pooling mode -> our pooler (same maths: see simcse/export.py)
ST_POOLING_TO_POOLER = {"cls": "cls_before_pooler", "mean": "avg", "weightedmean": "wavg", "lasttoken": "last"}
_ST_LEGACY_MODE_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                        "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# Extra candidates fetched beyond top_k before the exact re-scoring, so that float noise between the
# faiss and torch scores cannot change which sentences make the final top_k.
_CANDIDATE_SLACK = 16


def pooler_from_config(config) -> str | None:
    """The inference pooler recorded in a SimCSE checkpoint's config (rule 2), or None when absent."""
    pooler_type = getattr(config, "pooler_type", None)
    if pooler_type is None:
        return None
    if pooler_type == "cls" and getattr(config, "mlp_only_train", False):
        return "cls_before_pooler"
    return pooler_type


def _model_file(model_name_or_path: str, filename: str) -> str | None:
    """Path of ``filename`` in a local model directory or a (cached) hub repository, None if absent."""
    local = os.path.join(os.path.expanduser(model_name_or_path), filename)
    if os.path.isdir(os.path.expanduser(model_name_or_path)):
        return local if os.path.isfile(local) else None
    from transformers.utils import cached_file

    try:
        return cached_file(model_name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None


def _read_json(path: str) -> object:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def pooler_from_sentence_transformers(model_name_or_path: str) -> str | None:
    """The pooler of a sentence-transformers layout (rule 3), None when there is no ``modules.json``."""
    modules_file = _model_file(model_name_or_path, "modules.json")
    if modules_file is None:
        return None
    modules = _read_json(modules_file)
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    others = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if others or kinds.count("Pooling") != 1:
        raise SimCSEError(
            f"{model_name_or_path!r} is a sentence-transformers pipeline with modules {kinds}; the tool reproduces "
            "only Transformer + Pooling (+ Normalize). Pass pooler= to embed without the other modules, or use "
            "sentence_transformers.SentenceTransformer for this model"
        )
    folder = modules[kinds.index("Pooling")]["path"]
    config_file = _model_file(model_name_or_path, f"{folder}/config.json")
    if config_file is None:
        raise SimCSEError(f"{model_name_or_path!r}: modules.json names {folder!r} but {folder}/config.json is missing")
    config = _read_json(config_file)
    mode = config.get("pooling_mode")
    if mode is None:  # the long-standing format: one boolean per mode
        mode = [name for key, name in _ST_LEGACY_MODE_KEYS.items() if config.get(key)] or ["mean"]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in ST_POOLING_TO_POOLER:
        raise SimCSEError(
            f"{model_name_or_path!r} pools with sentence-transformers mode(s) {modes}, which the tool does not "
            f"implement (supported: {', '.join(ST_POOLING_TO_POOLER)}); pass pooler= to choose one of ours"
        )
    return ST_POOLING_TO_POOLER[modes[0]]


def _weight_names(model_name_or_path: str) -> list[str]:
    """Parameter names stored in a checkpoint, read without loading the tensors ([] if unknown)."""
    from safetensors import safe_open

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_file = _model_file(model_name_or_path, index_name)
        if index_file is not None:
            return list(_read_json(index_file).get("weight_map", {}))
    weights = _model_file(model_name_or_path, "model.safetensors")
    if weights is not None:
        with safe_open(weights, framework="pt") as handle:
            return list(handle.keys())
    weights = _model_file(model_name_or_path, "pytorch_model.bin")
    if weights is not None:
        try:
            return list(torch.load(weights, map_location="cpu", weights_only=True, mmap=True))
        except RuntimeError:  # a pre-1.6 (non-zip) .bin cannot be memory-mapped
            return list(torch.load(weights, map_location="cpu", weights_only=True))
    return []


def resolve_pooler(model_name_or_path: str, config, pooler: str | None) -> tuple[str, str]:
    """(pooler, source) by the rule in the module docstring."""
    if pooler is not None:
        return pooler, "argument"
    from_config = pooler_from_config(config)
    if from_config is not None:
        return from_config, "config"
    from_st = pooler_from_sentence_transformers(model_name_or_path)
    if from_st is not None:
        return from_st, "sentence-transformers"
    if any(name.endswith("pooler.dense.weight") for name in _weight_names(model_name_or_path)):
        warnings.warn(
            f"{model_name_or_path!r} records no pooler; using 'cls' (the [CLS] state through the model's trained "
            "pooling layer, right for supervised SimCSE models). Pass pooler='cls_before_pooler' for "
            "unsupervised SimCSE models, or pooler='avg' for mean-pooling encoders",
            UserWarning,
            stacklevel=3,
        )
        return "cls", "default"
    raise SimCSEError(
        f"{model_name_or_path!r} records no pooler and has no trained pooling layer, so none can be chosen "
        "safely; pass pooler= (e.g. pooler='avg' for mean-pooling encoders, 'cls_before_pooler' for [CLS])"
    )


def _as_sentence_list(sentences: str | Sequence[str], what: str) -> tuple[list[str], bool]:
    """(list of sentences, whether a single string was given); rejects empty lists and non-strings."""
    if isinstance(sentences, str):
        return [sentences], True
    if isinstance(sentences, (np.ndarray, torch.Tensor)):
        raise SimCSEError(f"{what} must be a string or a list of strings, got an array; pass the sentences")
    items = list(sentences)
    if not items:
        raise SimCSEError(f"{what} is an empty list; pass at least one sentence")
    bad = next((i for i, s in enumerate(items) if not isinstance(s, str)), None)
    if bad is not None:
        raise SimCSEError(f"{what}[{bad}] is {type(items[bad]).__name__} {items[bad]!r}, not a string")
    return items, False


def _read_sentences(sentences_or_file: str | Sequence[str]) -> list[str]:
    """A list of strings as given, or the non-empty lines of a text file (one sentence a line)."""
    if isinstance(sentences_or_file, (str, os.PathLike)):
        path = os.fspath(sentences_or_file)
        if not os.path.isfile(path):
            raise SimCSEError(
                f"{path!r} is not a file; pass a list of sentences, or the path of a text file with one per line"
            )
        with open(path, encoding="utf-8") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
        sentences = [line for line in lines if line.strip()]
        if not sentences:
            raise SimCSEError(f"{path!r} holds no sentences (every line is empty)")
        return sentences
    return _as_sentence_list(sentences_or_file, "sentences")[0]


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
    the module docstring for the rule used when it is None.
    """

    def __init__(self, model_name_or_path: str, device: str | None = None, pooler: str | None = None):
        from transformers import AutoConfig

        config = load_pretrained(model_name_or_path, AutoConfig.from_pretrained)
        self.pooler, self.pooler_source = resolve_pooler(model_name_or_path, config, pooler)
        try:
            check_pooler(self.pooler, config.model_type)
        except ValueError as err:
            raise SimCSEError(f"{err} (pooler from {self.pooler_source})") from None
        built = build_encoder(model_name_or_path, self.pooler, device=device)
        self.model_name_or_path = model_name_or_path
        self.tokenizer = built.tokenizer
        self.device = built.device
        self._embed = built.embed
        self._max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self._index_sentences: list[str] = []
        self._index_rows: dict[str, int] = {}
        self._index_vectors: torch.Tensor | None = None  # (N, H) unit rows, float32 CPU
        self._faiss_module = None  # the faiss module when the index uses it
        self._faiss_index = None
        self._index_built = False

    def __repr__(self) -> str:
        return (f"SimCSE({self.model_name_or_path!r}, pooler={self.pooler!r} from {self.pooler_source}, "
                f"device={str(self.device)!r}, indexed={self.index_size})")

    # ---------------------------------------------------------------- encoding

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 64,
        max_length: int = 128,
        normalize_to_unit: bool = True,
        return_numpy: bool = False,
    ) -> torch.Tensor | np.ndarray:
        """Sentence vectors: (n, H) for a list, (H,) for a single string; float32 on the CPU.

        No caching (a long-lived tool would grow without bound) and no gradient. Sentences longer than
        ``max_length`` tokens are truncated.
        """
        items, single = _as_sentence_list(sentences, "sentences")
        if batch_size < 1:
            raise SimCSEError(f"batch_size must be positive, got {batch_size}")
        if max_length < 2:
            raise SimCSEError(f"max_length must be at least 2 tokens, got {max_length}")
        if self._max_positions is not None and max_length > self._max_positions:
            raise SimCSEError(f"max_length {max_length} exceeds this model's limit of {self._max_positions} "
                              f"positions; pass max_length={self._max_positions} or less")
        encoder = SentenceEncoder(self._embed, self.tokenizer, self.device, batch_size=batch_size,
                                  max_length=max_length, cache=False)
        vectors = encoder.encode(items)  # (n, H)
        if normalize_to_unit:
            vectors = F.normalize(vectors, dim=-1)
        if single:
            vectors = vectors[0]  # (H,)
        return vectors.numpy() if return_numpy else vectors

    def _unit_vectors(self, value, what: str) -> tuple[torch.Tensor, bool]:
        """(m, H) unit rows from sentences or precomputed vectors, and whether a single item was given."""
        if isinstance(value, (np.ndarray, torch.Tensor)):
            tensor = torch.as_tensor(value, dtype=torch.float32).cpu()
            if tensor.dim() not in (1, 2) or tensor.shape[-1] == 0 or tensor.numel() == 0:
                raise SimCSEError(f"{what} vectors must be shaped (H,) or (m, H), got {tuple(tensor.shape)}")
            single = tensor.dim() == 1
            return F.normalize(tensor.reshape(-1, tensor.shape[-1]), dim=-1), single
        items, single = _as_sentence_list(value, what)
        return self.encode(items), single

    def similarity(self, queries, keys) -> float | np.ndarray:
        """Cosine similarity. Each side is a string, a list of strings or precomputed vectors ((H,) or
        (m, H)). str/str -> float; list/list -> (n, m) array; a single string on one side drops that axis."""
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

    def build_index(self, sentences_or_file: str | Sequence[str], use_faiss: bool | None = None,
                    batch_size: int = 64, max_length: int = 128) -> int:
        """Replace the index with these sentences (a list, or a text file with one per line).

        use_faiss: None = faiss when importable, True = faiss or an error, False = torch only.
        Returns the number of distinct sentences indexed.
        """
        sentences = _read_sentences(sentences_or_file)  # bad input leaves the current index as it is
        faiss = _import_faiss(use_faiss)
        self._index_sentences, self._index_rows, self._index_vectors = [], {}, None
        self._faiss_module, self._faiss_index = faiss, None
        self._index_built = True
        return self._add(sentences, batch_size, max_length)

    def add_to_index(self, sentences_or_file: str | Sequence[str], batch_size: int = 64,
                     max_length: int = 128) -> int:
        """Add sentences (a list or a file) to the index; sentences already indexed are skipped.
        Builds the index (faiss when importable) if there is none. Returns the new index size."""
        sentences = _read_sentences(sentences_or_file)
        if not self._index_built:
            return self.build_index(sentences, batch_size=batch_size, max_length=max_length)
        return self._add(sentences, batch_size, max_length)

    def _add(self, sentences: list[str], batch_size: int, max_length: int) -> int:
        new = [s for s in dict.fromkeys(sentences) if s not in self._index_rows]
        if not new:
            return self.index_size
        vectors = self.encode(new, batch_size=batch_size, max_length=max_length, normalize_to_unit=True)  # (k, H)
        if self._faiss_module is not None:
            if self._faiss_index is None:
                self._faiss_index = self._faiss_module.IndexFlatIP(vectors.shape[1])
            self._faiss_index.add(np.ascontiguousarray(vectors.numpy(), dtype=np.float32))
        old = self._index_vectors
        self._index_vectors = vectors if old is None else torch.cat([old, vectors])
        for sentence in new:
            self._index_rows[sentence] = len(self._index_sentences)
            self._index_sentences.append(sentence)
        return self.index_size

    def _candidates(self, q: torch.Tensor, k: int) -> list[list[int]]:
        """Row ids of the k best inner products per query row (faiss or torch)."""
        if self._faiss_index is not None:
            _, ids = self._faiss_index.search(np.ascontiguousarray(q.numpy(), dtype=np.float32), k)  # (n, k)
            return [[int(i) for i in row if i >= 0] for row in ids]
        return (q @ self._index_vectors.T).topk(k, dim=1).indices.tolist()  # (n, k)

    def search(self, queries: str | Sequence[str], threshold: float = 0.6, top_k: int = 5,
               batch_size: int = 64, max_length: int = 128) -> list:
        """The indexed sentences most similar to each query: ``[(sentence, cosine), ...]`` with cosine >=
        threshold, at most top_k, best first (ties: the earlier indexed sentence first). A list of such
        lists for a list of queries."""
        if self._index_vectors is None or self.index_size == 0:
            raise SimCSEError("the index is empty; call build_index(sentences_or_file) before search()")
        if top_k < 1:
            raise SimCSEError(f"top_k must be at least 1, got {top_k}")
        items, single = _as_sentence_list(queries, "queries")
        q = self.encode(items, batch_size=batch_size, max_length=max_length, normalize_to_unit=True)  # (n, H)
        k = min(self.index_size, top_k + _CANDIDATE_SLACK)
        index64 = self._index_vectors.double()
        results = []
        for row, candidates in zip(q.double(), self._candidates(q, k)):
            ids = sorted(set(candidates))  # same set -> same float64 arithmetic, whichever backend
            scores = (index64[ids] @ row).tolist()  # the same float64 re-scoring for both backends
            ranked = sorted(zip(ids, scores), key=lambda pair: (-pair[1], pair[0]))[:top_k]
            results.append([(self._index_sentences[i], s) for i, s in ranked if s >= threshold])
        return results[0] if single else results
