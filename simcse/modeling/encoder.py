"""Inference-time sentence encoding shared by ``evaluation.py``, the in-training dev evaluation and the tool.

:class:`SentenceEncoder` tokenises once, sorts by token length so each batch carries little padding,
runs the model without gradient tracking, pools with :mod:`simcse.modeling.poolers` and remembers the sentences
it has encoded, so a sentence that appears in several tasks is encoded once per run. The memory stays
bounded: :meth:`SentenceEncoder.retain`, called as each SentEval task starts (its ``prepare`` hook),
forgets the embeddings the new task does not need.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from senteval.classifier import resolve_device as resolve_device  # the one device rule
from simcse.errors import SimCSEError
from simcse.modeling.backbones import model_class_for
from simcse.modeling.models import is_simcse_checkpoint, pool_then_head
from simcse.modeling.poolers import NEEDS_HIDDEN_STATES, check_pooler, is_decoder, pool, uses_mlp_head

# embed(input_ids, attention_mask) -> (B, H) sentence vectors
EmbedFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# Model types whose position ids start at padding_idx + 1 (fairseq's convention, kept by transformers'
# create_position_ids_from_input_ids): the first padding_idx + 1 rows of the position table are never
# used for a token, so RoBERTa's 514 rows hold 512 usable positions.
OFFSET_POSITION_MODELS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                                    "data2vec-text", "longformer", "mpnet", "ibert", "luke", "xmod"})


def position_limit(config) -> int | None:
    """The most tokens (special tokens included) a model can take: ``max_position_embeddings`` (BERT),
    ``n_positions`` (GPT-2), or ``max_position_embeddings - padding_idx - 1`` for the RoBERTa family
    (514 - 1 - 1 = 512). ``config`` is a transformers config or its dict; None when it records no limit."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    limit = get("max_position_embeddings") or get("n_positions")
    if limit is None:
        return None
    if get("model_type") in OFFSET_POSITION_MODELS:
        pad = get("pad_token_id")
        limit -= (1 if pad is None else pad) + 1
    return int(limit)


def check_max_length(max_length: int | None, config, name: str = "`max_seq_length`") -> int | None:
    """The truncation length to use: ``max_length`` when it is at least 2 and within the model's
    :func:`position_limit`, the limit itself when ``max_length`` is None; otherwise a SimCSEError naming
    ``name`` (the flag or argument the user set) and the limit. ``config``: a config, its dict, or the limit."""
    limit = config if config is None or isinstance(config, int) else position_limit(config)
    if max_length is None:
        return limit
    if max_length < 2:
        raise SimCSEError(f"{name} must be at least 2 tokens, got {max_length}")
    if limit is not None and max_length > limit:
        raise SimCSEError(f"{name} {max_length} exceeds this model's limit of {limit} positions; "
                          f"use {limit} or less")
    return max_length


class SentenceEncoder:
    """Encode lists of sentences with any ``embed`` function (see :data:`EmbedFn`).

    cache: remember each encoded sentence's embedding (until :meth:`retain` drops it).
    token_cache: a dict ``text -> token ids`` kept by the caller across encoders, so that a text is
    tokenized once however many encoders (e.g. one per dev evaluation during training) encode it; it
    must only be shared between encoders with the same tokenizer and ``max_length``.
    """

    def __init__(
        self,
        embed: EmbedFn,
        tokenizer,
        device: torch.device,
        batch_size: int = 64,
        max_length: int | None = None,
        show_progress: bool = False,
        cache: bool = True,
        token_cache: dict[str, np.ndarray] | None = None,
    ):
        if batch_size < 1:
            raise SimCSEError(f"batch size must be positive, got {batch_size}")
        self.embed = embed
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.show_progress = show_progress
        self._cache: dict[str, torch.Tensor] | None = {} if cache else None
        self._token_cache = token_cache
        self.sentences_encoded = 0  # model forward passes actually run, per sentence
        self.model = None  # the module behind ``embed`` when build_encoder made it (to move it to a device)

    def _pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding for encoders and decoders alike
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _tokenize(self, texts: list[str]) -> list[Sequence[int]]:
        kwargs = {"truncation": True}
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        if self._token_cache is None:
            return self.tokenizer(texts, add_special_tokens=True, **kwargs)["input_ids"]
        new = [text for text in dict.fromkeys(texts) if text not in self._token_cache]
        if new:
            for text, ids in zip(new, self.tokenizer(new, add_special_tokens=True, **kwargs)["input_ids"]):
                self._token_cache[text] = np.asarray(ids, dtype=np.int32)  # ~4 bytes a token, not a list's ~36
        return [self._token_cache[text] for text in texts]

    @torch.inference_mode()
    def _encode_new(self, texts: list[str]) -> torch.Tensor:
        token_ids = self._tokenize(texts)
        empty = [i for i, ids in enumerate(token_ids) if len(ids) == 0]
        if empty:  # a tokenizer without special tokens (GPT-2) gives nothing to embed for ""
            raise SimCSEError(
                f"{len(empty)} of {len(texts)} sentence(s) give no tokens (the first: {texts[empty[0]]!r}); this "
                "tokenizer adds no special tokens, so an empty sentence has nothing to embed. Drop or fill empty "
                "sentences before encoding")
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        out: torch.Tensor | None = None
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not self.show_progress, leave=False):
            index = order[start : start + self.batch_size]
            ids, mask = self._pad([token_ids[i] for i in index])
            vectors = self.embed(ids, mask).float().cpu()
            if out is None:
                out = torch.empty((len(texts), vectors.shape[1]), dtype=torch.float32)
            out[torch.tensor(index)] = vectors
        self.sentences_encoded += len(texts)
        assert out is not None
        return out

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """(n, H) float32 CPU tensor, one row per input sentence (duplicates allowed)."""
        sentences = list(sentences)
        if not sentences:
            raise SimCSEError("nothing to encode: the sentence list is empty")
        if self._cache is None:
            return self._encode_new(sentences)
        new = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if new:
            for text, row in zip(new, self._encode_new(new)):
                self._cache[text] = row
        return torch.stack([self._cache[s] for s in sentences])

    def retain(self, sentences: Iterable[str]) -> None:
        """Forget the cached embeddings of every sentence not in ``sentences``.

        Called with a task's sentences before the task runs, it bounds the cache by the largest task
        instead of growing with every task of the run, while sentences shared by consecutive tasks (the
        STS years overlap, STS-B is drawn from them) are still encoded once.
        """
        if self._cache is None:
            return
        keep = set(sentences)
        for text in [t for t in self._cache if t not in keep]:
            del self._cache[text]

    @property
    def cached_embeddings(self) -> int:
        """How many embeddings the cache holds now."""
        return len(self._cache) if self._cache is not None else 0


def load_pretrained(model_name_or_path: str, loader: Callable, what: str = "model"):
    """``loader(model_name_or_path)`` with a one-line error when the path or hub id cannot be loaded."""
    expanded = os.path.expanduser(model_name_or_path)
    if (expanded.startswith((".", "/", "~")) or os.path.isabs(expanded)) and not os.path.exists(expanded):
        raise SimCSEError(f"model path {model_name_or_path!r} does not exist; give a local directory or a hub id")
    if os.path.exists(expanded) and not os.path.isdir(expanded):
        raise SimCSEError(f"model path {model_name_or_path!r} is a file; give the directory that holds config.json")
    if os.path.isdir(expanded) and not os.path.isfile(os.path.join(expanded, "config.json")):
        raise SimCSEError(
            f"{model_name_or_path!r} has no config.json, so it is not a Hugging Face model directory"
        )
    try:
        return loader(expanded if os.path.exists(expanded) else model_name_or_path)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SimCSEError(
            f"could not load {what} {model_name_or_path!r} (not a local directory, and the hub gave: {first})"
        ) from None


def hf_embed_fn(model, pooler_type: str) -> EmbedFn:
    """Embedding function of a plain Hugging Face backbone (``AutoModel``).

    ``cls`` uses the backbone's own pooling layer (BERT's ``pooler_output`` = tanh(W h_cls + b)), which
    is where a converted SimCSE checkpoint keeps its MLP head.
    """
    model_type = model.config.model_type
    check_pooler(pooler_type, model_type)
    if uses_mlp_head(pooler_type) and getattr(model, "pooler", None) is None:
        raise SimCSEError(
            f"pooler 'cls' needs the model's pooling layer, but this {model_type} model has none; "
            "use `pooler` cls_before_pooler (the [CLS] state without the head)"
        )
    want_hidden = pooler_type in NEEDS_HIDDEN_STATES

    def embed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden,
                    return_dict=True)
        if uses_mlp_head(pooler_type):
            return out.pooler_output
        return pool(pooler_type, attention_mask, out.last_hidden_state, out.hidden_states if want_hidden else None)

    return embed


def simcse_embed_fn(model, pooler_type: str) -> EmbedFn:
    """Embedding function of a training checkpoint (``BertForCL`` etc.) with the same meaning as on the
    converted model: ``cls`` = [CLS] state through the MLP head, ``cls_before_pooler`` = without it."""

    def embed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        want_hidden = pooler_type in NEEDS_HIDDEN_STATES
        out = model.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden,
                             return_dict=True)
        return pool_then_head(pooler_type, attention_mask, out, model.mlp_head)

    return embed


def truncated(embed: EmbedFn, dim: int, width: int | None) -> EmbedFn:
    """``embed`` keeping only the first ``dim`` coordinates of each embedding (B, dim)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or (width is not None and dim > width):
        raise SimCSEError(f"`truncate_dim` must be an integer in [1, {width or 'the embedding width'}], got {dim!r}")

    def embed_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return embed(input_ids, attention_mask)[:, :dim]

    return embed_prefix


def prepare_tokenizer(tokenizer, model_type: str):
    """Decoders get a pad token (eos, where the tokenizer has none), right padding and, except GPT-2 (whose
    SimCSE setting embeds the bare sentence), an end-of-sequence token after every sentence where the
    tokenizer adds none, as LLM embedders do (the last token then sees the whole sentence; the ``last``
    pooler reads it). The eos is added by the tokenizer's own post-processor, so truncation keeps it and the
    tokenizer saved with a checkpoint (the tool, the sentence-transformers export) adds it too. Encoders are
    left as they are."""
    if is_decoder(model_type):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        if model_type != "gpt2":
            append_eos(tokenizer)
    if tokenizer.pad_token_id is None:
        raise SimCSEError(f"the tokenizer of this {model_type} model has no padding token and no eos token to reuse")
    return tokenizer


def append_eos(tokenizer) -> None:
    """Make ``tokenizer`` end every sentence with its eos token (a no-op where it already does)."""
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None:
        raise SimCSEError("this decoder's tokenizer has no eos token to end sentences with; set "
                          "tokenizer.eos_token (and save it with the model)")
    if tokenizer("a")["input_ids"][-1:] == [eos_id]:
        return
    from tokenizers import processors

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SimCSEError(f"{type(tokenizer).__name__} is not a fast tokenizer, so an eos token cannot be appended; "
                          "convert it to a fast one (tokenizer.json)")
    template = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                             special_tokens=[(eos, eos_id)])
    current = backend.post_processor
    backend.post_processor = template if current is None else processors.Sequence([current, template])


def build_encoder(
    model_name_or_path: str,
    pooler_type: str,
    device: str | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    show_progress: bool = False,
    trust_remote_code: bool = False,
    truncate_dim: int | None = None,
) -> SentenceEncoder:
    """Load a Hugging Face checkpoint (local directory or hub id) as a :class:`SentenceEncoder`.

    trust_remote_code: allow Python code shipped with the checkpoint to run (off unless asked for).
    truncate_dim: keep only the first D coordinates of every embedding (Matryoshka representation
    learning, arXiv:2205.13147: a model trained for it stays good at its prefixes); None keeps them all."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    remote = {"trust_remote_code": trust_remote_code}
    config = load_pretrained(model_name_or_path, lambda p: AutoConfig.from_pretrained(p, **remote))
    check_pooler(pooler_type, config.model_type)
    max_length = check_max_length(max_length, config)  # never past the position table
    tokenizer = load_pretrained(model_name_or_path, lambda p: AutoTokenizer.from_pretrained(p, **remote),
                                what="tokenizer")
    tokenizer = prepare_tokenizer(tokenizer, config.model_type)
    simcse_checkpoint = is_simcse_checkpoint(config)  # a train.py checkpoint: no conversion needed
    model_cls = model_class_for(config.model_type) if simcse_checkpoint else AutoModel
    model, info = load_pretrained(model_name_or_path,
                                  lambda p: model_cls.from_pretrained(p, output_loading_info=True, **remote))
    head = "mlp." if simcse_checkpoint else "pooler."
    if uses_mlp_head(pooler_type) and any(key.startswith(head) for key in info["missing_keys"]):
        # transformers would fill the missing layer with random weights and the scores would be noise
        raise SimCSEError(
            f"pooler 'cls' needs a trained pooling layer ({head}dense), but {model_name_or_path!r} has none; "
            "use `pooler` cls_before_pooler (the [CLS] state) or the pooler the model was trained with (e.g. avg)"
        )
    embed = simcse_embed_fn(model, pooler_type) if simcse_checkpoint else hf_embed_fn(model, pooler_type)
    if truncate_dim is not None:
        embed = truncated(embed, truncate_dim, getattr(config, "hidden_size", None) or getattr(config, "n_embd", None))
    resolved = resolve_device(device)
    model.to(resolved).eval()
    encoder = SentenceEncoder(
        embed,
        tokenizer,
        resolved,
        batch_size=batch_size,
        max_length=max_length,
        show_progress=show_progress,
    )
    encoder.model = model
    return encoder
