"""Evaluate our checkpoints with the ``mteb`` package (MTEB, arXiv:2210.07316), fully offline.

Three parts, written against mteb 2.x (embeddings-benchmark/mteb ``mteb/models/models_protocols.py``,
``mteb/models/abs_encoder.py``, ``mteb/abstasks/sts.py``, ``mteb/abstasks/retrieval.py``, ``mteb/evaluate.py``):

* :class:`MTEBEncoder` implements mteb's ``EncoderProtocol`` around :func:`simcse.modeling.encoder.build_encoder`.
  mteb hands ``encode`` a DataLoader whose batches carry a ``text`` column; the adapter collects every
  text of the call, prepends ``query_prompt`` / ``document_prompt`` when mteb's ``prompt_type`` says
  query / document (nothing for symmetric tasks such as STS, where ``prompt_type`` is None, as mteb's own
  ``get_prompt_name`` does) and encodes them in one call, so our encoder sorts them by length.
  Normalisation: mteb scores STS and retrieval with cosine similarity (the metadata says so), which does
  not depend on the vectors' norms, so the adapter returns the raw embeddings by default, as our
  evaluation does; ``normalize=True`` L2-normalises them, which changes only mteb's auxiliary
  Euclidean / Manhattan STS figures.
* Local tasks whose ``load_data`` reads files instead of the hub: :class:`LocalSTSBenchmark` and
  :class:`LocalSICKR` (the SentEval test files, read by our own SentEval loaders so the pairs and gold
  scores are exactly those of ``evaluation.py``; sentences are the loaders' tokens joined by spaces, gold
  0..5 as in MTEB, which rescales it) and :func:`beir_task` (a BEIR folder read by
  :func:`simcse.evaluation.beir.read_beir_folder`; the task's ``ignore_identical_ids``, the class attribute
  mteb's retrieval evaluation passes on to drop a query's own id from its results, is the folder's
  ``dataset.json`` declaration, as :class:`simcse.evaluation.retrieval.RetrievalEvaluator` applies it).
* :func:`run_mteb`: one model, several tasks, ``{"STSBenchmark": spearman, "<name>_ndcg@10": ...}``.

The result cache. ``mteb.evaluate`` keeps results in a ``ResultCache`` (``~/.cache/mteb`` or
``$MTEB_CACHE``) keyed by the model metadata's name, revision and ``experiment_kwargs`` plus the task
name, and with its default ``overwrite_strategy="only-missing"`` returns a stored result without running
the model. A bare encoder gets ``ModelMeta.create_empty()``: every such model is
``no_model_name/available`` at ``no_revision_available``, so a second checkpoint would silently get the
first one's scores. Two guards: :func:`run_mteb` passes ``cache=None`` (mteb neither reads nor writes a
cache; every call runs the model), and :func:`model_meta` gives each checkpoint its own key anyway:
name ``local/<folder>-<hash of the resolved path>``, revision a hash of the checkpoint's files (name,
size, modification time), ``experiment_kwargs`` the pooler, normalisation, truncation and prompts, for
anyone who passes an :class:`MTEBEncoder` to ``mteb.evaluate`` with a cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from senteval.datapath import resolve_data_dir
from senteval.registry import build_task
from simcse.errors import SimCSEError
from simcse.modeling.encoder import build_encoder

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def files_fingerprint(path: str | os.PathLike) -> str:
    """A 12-hex hash of the top-level files of a directory (name, size, mtime), or of a file; it changes when
    a checkpoint or data file is rewritten. A path that does not exist (a hub id) hashes its string."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        return short_hash(str(path), 12)
    stats = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return short_hash("\n".join(stats), 12)


def model_meta(model_name_or_path: str, experiment: dict[str, Any] | None = None, *, embed_dim: int | None = None,
               max_tokens: int | None = None, revision: str | None = None) -> ModelMeta:
    """mteb metadata naming this checkpoint: ``local/<folder>-<8-hex hash of the resolved absolute path>``,
    revision :func:`files_fingerprint` of the directory (unless given), cosine similarity."""
    expanded = os.path.expanduser(str(model_name_or_path))
    resolved = os.path.realpath(expanded) if os.path.exists(expanded) else str(model_name_or_path)
    folder = UNSAFE.sub("_", Path(resolved).name or "model").strip("_") or "model"
    return ModelMeta(
        loader=None, name=f"local/{folder}-{short_hash(resolved)}", revision=revision or files_fingerprint(resolved),
        release_date=None, languages=None, n_parameters=None, memory_usage_mb=None, max_tokens=max_tokens,
        embed_dim=embed_dim, license=None, open_weights=True, public_training_code=None, public_training_data=None,
        framework=["PyTorch"], similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=bool(experiment and (experiment.get("query_prompt") or experiment.get("document_prompt"))),
        training_datasets=None, experiment_kwargs=experiment or None,
    )


class MTEBEncoder(AbsEncoder):
    """mteb 2.x ``EncoderProtocol`` around our encoder (see the module docstring for prompts and normalisation).

    model_name: checkpoint directory (or hub id) given to :func:`simcse.modeling.encoder.build_encoder` with ``pooler``,
    ``device``, ``batch_size`` and ``max_length``. encoder: an already built encoder (anything with
    ``encode(list[str]) -> (N, D) tensor``) used instead of loading one; ``model_name`` still names it.
    """

    def __init__(self, model_name: str, revision: str | None = None, *, pooler: str = "avg",
                 device: str | None = None, batch_size: int = 64, max_length: int | None = None,
                 normalize: bool = False, query_prompt: str = "", document_prompt: str = "", encoder=None,
                 **kwargs: Any):
        self.encoder = encoder if encoder is not None else build_encoder(
            str(model_name), pooler, device=device, batch_size=batch_size, max_length=max_length)
        self.normalize = normalize
        self.prompts = {PromptType.query: query_prompt or "", PromptType.document: document_prompt or ""}
        model = getattr(self.encoder, "model", None)
        config = getattr(model, "config", None)
        experiment = {"pooler": pooler, "normalize": normalize, "max_length": max_length,
                      "query_prompt": query_prompt or "", "document_prompt": document_prompt or ""}
        self.mteb_model_meta = model_meta(
            str(model_name), experiment, revision=revision,
            embed_dim=getattr(config, "hidden_size", None) or getattr(config, "n_embd", None),
            max_tokens=getattr(self.encoder, "max_length", None))

    def prompt(self, prompt_type: PromptType | str | None) -> str:
        """The prefix for mteb's ``prompt_type``: query_prompt, document_prompt, or "" (None: symmetric)."""
        return "" if prompt_type is None else self.prompts[PromptType(prompt_type)]

    def encode(self, inputs, *, task_metadata=None, hf_split: str = "", hf_subset: str = "",
               prompt_type: PromptType | str | None = None, **kwargs: Any) -> np.ndarray:
        """(N, D) float32 embeddings of every ``text`` of the DataLoader ``inputs``, in order (mteb's own
        ``batch_size`` only shapes its DataLoader; ours batches by token length)."""
        texts = [text for batch in inputs for text in batch["text"]]
        prefix = self.prompt(prompt_type)
        if not texts:
            return np.zeros((0, self.mteb_model_meta.embed_dim or 0), dtype=np.float32)
        vectors = self.encoder.encode([prefix + text for text in texts])
        if hasattr(self.encoder, "retain"):
            self.encoder.retain(())  # mteb encodes a corpus chunk by chunk: keep the memory bounded
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu().numpy()


def _metadata(name: str, description: str, task_type: str, main_score: str, path: str, revision: str,
              split: str = "test", reference: str | None = None) -> TaskMetadata:
    return TaskMetadata(name=name, description=description, reference=reference, dataset={"path": path,
                        "revision": revision}, type=task_type, category="t2t", modalities=["text"],
                        eval_splits=[split], eval_langs=["eng-Latn"], main_score=main_score,
                        license="not specified", bibtex_citation="")


class LocalSTSTask(AbsTaskSTS):
    """An STS test split read from the SentEval data (``senteval_data`` resolved as ``evaluation.py`` does:
    :func:`senteval.datapath.resolve_data_dir`), by SentEval's own loader ``senteval_name``."""

    senteval_name: str
    min_score = 0
    max_score = 5

    def __init__(self, senteval_data: str | os.PathLike | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.senteval_data = senteval_data

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        task = build_task(self.senteval_name, resolve_data_dir(self.senteval_data) / "downstream")
        first, second, gold = task.data["test"]
        split = Dataset.from_dict({"sentence1": [" ".join(s) for s in first],
                                   "sentence2": [" ".join(s) for s in second], "score": [float(g) for g in gold]})
        self.dataset = {"default": DatasetDict({"test": split})}
        self.data_loaded = True


class LocalSTSBenchmark(LocalSTSTask):
    """STS-B test (``downstream/STS/STSBenchmark/sts-test.csv``); mteb's hub task is ``STSBenchmark``."""

    senteval_name = "STSBenchmark"
    metadata = _metadata("LocalSTSBenchmark", "STS Benchmark test split from the local SentEval data.", "STS",
                         "cosine_spearman", "local/senteval-STSBenchmark", "senteval",
                         reference="https://aclanthology.org/S17-2001")


class LocalSICKR(LocalSTSTask):
    """SICK relatedness test (``downstream/SICK/SICK_test_annotated.txt``); mteb's hub task is ``SICK-R``."""

    senteval_name = "SICKRelatedness"
    metadata = _metadata("LocalSICK-R", "SICK relatedness test split from the local SentEval data.", "STS",
                         "cosine_spearman", "local/senteval-SICKRelatedness", "senteval",
                         reference="https://aclanthology.org/L14-1314/")


STS_TASKS: dict[str, type[LocalSTSTask]] = {"STSBenchmark": LocalSTSBenchmark, "SICKRelatedness": LocalSICKR}


class LocalRetrievalTask(AbsTaskRetrieval):
    """Retrieval on a BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), read by
    :func:`simcse.evaluation.beir.read_beir_folder`; build one with :func:`beir_task`. A document's text is
    the reader's (title + " " + text; mteb strips it). Only the reader's scored queries (a judgement >= 1) are
    kept, with their qrels: mteb drops queries without qrels rows but would average in a query judged all 0.

    ``ignore_identical_ids`` (mteb's attribute: a document whose id equals the query id is dropped from that
    query's results before scoring) is :attr:`BeirData.ignore_identical_ids`, the folder's ``dataset.json``,
    unless :func:`beir_task` was given an override (``identical_ids_override``)."""

    folder: str
    split: str
    identical_ids_override: bool | None = None

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from simcse.evaluation.beir import read_beir_folder

        data = read_beir_folder(self.folder, self.split)
        override = self.identical_ids_override
        self.ignore_identical_ids = data.ignore_identical_ids if override is None else override
        scored = data.scored_queries()
        corpus = Dataset.from_dict({"id": list(data.corpus), "text": list(data.corpus.values())})
        queries = Dataset.from_dict({"id": scored, "text": [data.queries[q] for q in scored]})
        self.dataset = {"default": {self.split: {"corpus": corpus, "queries": queries,
                                                 "relevant_docs": {q: dict(data.qrels[q]) for q in scored},
                                                 "top_ranked": None}}}
        self.data_loaded = True


def beir_task(folder: str | os.PathLike, name: str | None = None, split: str = "test",
              ignore_identical_ids: bool | None = None) -> LocalRetrievalTask:
    """An mteb retrieval task (main score nDCG@10) on a BEIR folder, named ``LocalBEIR-<name>`` (name: the
    folder's name by default). Each call makes its own class, as mteb keeps a task's metadata on the class.
    ignore_identical_ids: None follows the folder's ``dataset.json`` (read now for the class attribute and
    again when the data loads); True or False overrides it, as in ``RetrievalEvaluator``."""
    from simcse.evaluation.beir import DATASET_FILE, read_dataset_json

    if ignore_identical_ids is not None and not isinstance(ignore_identical_ids, bool):
        raise SimCSEError(f"ignore_identical_ids must be None (the folder's dataset.json), True or False, got "
                          f"{ignore_identical_ids!r}")
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise SimCSEError(f"BEIR folder {str(folder)!r} does not exist")
    name = name or path.name
    declared = read_dataset_json(path) if ignore_identical_ids is None else ignore_identical_ids
    qrels = path / "qrels" / f"{split}.tsv"
    files = (path / "corpus.jsonl", path / "queries.jsonl", qrels, path / DATASET_FILE)
    revision = short_hash(":".join(files_fingerprint(p) for p in files) + f":ignore_identical_ids={declared}")
    metadata = _metadata(f"LocalBEIR-{name}", f"BEIR folder {path} ({split} qrels).", "Retrieval", "ndcg_at_10",
                         str(path), revision, split=split)
    cls = type(f"LocalBEIR_{UNSAFE.sub('_', name)}", (LocalRetrievalTask,),
               {"metadata": metadata, "folder": str(path), "split": split, "ignore_identical_ids": declared,
                "identical_ids_override": ignore_identical_ids, "__module__": __name__})
    return cls()


def parse_retrieval(spec: str | os.PathLike | tuple[str, str]) -> tuple[str, str]:
    """``(folder, name)`` from ``DIR:NAME``, ``DIR`` or a (folder, name) pair; without a name, the one
    :class:`simcse.evaluation.retrieval.RetrievalEvaluator` gives the folder (its ``default_name``)."""
    if isinstance(spec, tuple):
        return str(spec[0]), str(spec[1])
    spec = str(spec)
    folder, sep, name = spec.rpartition(":")
    if not sep or not name or "/" in name or os.sep in name:
        from simcse.evaluation.retrieval import default_name

        folder, name = spec, default_name(spec)
    return folder, name


def run_mteb(model_name_or_path: str, pooler: str = "avg", tasks: Iterable[str] = ("STSBenchmark",),
             senteval_data: str | os.PathLike | None = None,
             retrieval: Sequence[str | os.PathLike | tuple[str, str]] = (), *, split: str = "test",
             batch_size: int = 64, max_length: int | None = None, device: str | None = None, normalize: bool = False,
             query_prompt: str = "", document_prompt: str = "", encoder=None,
             ignore_identical_ids: bool | None = None) -> dict[str, float]:
    """Score one model with ``mteb.evaluate`` on local tasks, without mteb's result cache (``cache=None``).

    tasks: STS tasks by SentEval name (``STSBenchmark``, ``SICKRelatedness``; test split). retrieval: BEIR
    folders (see :func:`parse_retrieval`), scored on ``split``, each with its ``dataset.json``'s
    ``ignore_identical_ids`` unless ``ignore_identical_ids`` overrides it for all. Returns
    ``{task: cosine Spearman}`` and ``{"<name>_ndcg@10": ...}``, values in 0..1.
    """
    import mteb

    tasks = list(tasks)
    unknown = [t for t in tasks if t not in STS_TASKS]
    if unknown:
        raise SimCSEError(f"unknown MTEB STS task(s) {unknown}; choose from {list(STS_TASKS)}")
    model = MTEBEncoder(model_name_or_path, pooler=pooler, device=device, batch_size=batch_size,
                        max_length=max_length, normalize=normalize, query_prompt=query_prompt,
                        document_prompt=document_prompt, encoder=encoder)
    todo: list[tuple[AbsTaskSTS | AbsTaskRetrieval, str, str]] = [
        (STS_TASKS[t](senteval_data=senteval_data), t, "test") for t in tasks]
    for spec in retrieval:
        folder, name = parse_retrieval(spec)
        todo.append((beir_task(folder, name, split, ignore_identical_ids), f"{name}_ndcg@10", split))
    names = [task.metadata.name for task, _, _ in todo]
    if len(set(names)) != len(names):
        raise SimCSEError(f"two tasks share a name in {names}; give each retrieval folder its own DIR:NAME")
    result = mteb.evaluate(model, [task for task, _, _ in todo], cache=None, overwrite_strategy="always",
                           co2_tracker=False, show_progress_bar=False, raise_error=True,
                           encode_kwargs={"batch_size": batch_size, "show_progress_bar": False})
    by_name = {r.task_name: r for r in result.task_results}
    scores = {}
    for task, key, task_split in todo:
        if task.metadata.name not in by_name:
            raise SimCSEError(f"mteb returned no result for {task.metadata.name}")
        scores[key] = float(by_name[task.metadata.name].scores[task_split][0]["main_score"])
    return scores
