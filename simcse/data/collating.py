"""Collating a batch: padding the sentences of each example, the keyed MLM masks and the collator
(the third step of :mod:`simcse.data`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from simcse.data.hashing import splitmix64
from simcse.data.reading import SCORE_COLUMN
from simcse.data.sampler import hash_sentences
from simcse.data.tokenizing import SentenceBatch
from simcse.errors import SimCSEError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

def check_mlm_probability(probability: float) -> float:
    """The masking rate of the MLM objective, in (0, 1) (1 would mask every token: nothing left to read)."""
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 < probability < 1:
        raise SimCSEError(f"`mlm_probability` must be in (0, 1), got {probability!r}; the SimCSE recipe uses 0.15")
    return float(probability)


IGNORE_INDEX = -100  # label of positions the masked-LM loss ignores (torch cross_entropy's default)


def _batch_scores(features: Sequence[dict[str, Any]] | SentenceBatch) -> torch.Tensor | None:
    """(batch,) float32 scores of graded pairs, or None for data without a score column."""
    if isinstance(features, SentenceBatch):
        return None if features.scores is None else torch.as_tensor(np.asarray(features.scores, dtype=np.float32))
    if not features or SCORE_COLUMN not in features[0]:
        return None
    return torch.tensor([float(feature[SCORE_COLUMN]) for feature in features], dtype=torch.float32)


def batch_text_keys(features: Sequence[dict[str, Any]] | SentenceBatch) -> torch.Tensor:
    """(batch, num_sent) int64: the 64-bit hash of each sentence's token ids (the sampler's
    :func:`~simcse.data.sampler.hash_sentences`, its uint64 bits read as int64), so equal token sequences
    have equal keys; the loss masks duplicate texts with them (``mask_duplicate_texts``)."""
    batch = features if isinstance(features, SentenceBatch) else _sentence_batch(features)
    hashes = hash_sentences(np.asarray(batch.token_ids), np.asarray(batch.lengths, dtype=np.int64))
    return torch.from_numpy(hashes.view(np.int64).reshape(len(batch), batch.num_sent).copy())


def _no_pad_token_error(tokenizer: PreTrainedTokenizerBase) -> SimCSEError:
    return SimCSEError(
        f"tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has no pad token, so "
        "batches cannot be padded; for decoders such as GPT-2 set `tokenizer.pad_token = tokenizer.eos_token`"
    )


# ----- collation ------------------------------------------------------------------------------------


def pad_sentence_features(
    features: Sequence[dict[str, Any]] | SentenceBatch,
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    pad_to_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad the examples' num_sent sequences into (batch, num_sent, max_len) tensors.

    ``features``: a :class:`SentenceBatch`, or dicts holding num_sent sequences per key. ``input_ids``
    are padded with ``pad_token_id``, ``attention_mask`` and ``token_type_ids`` (when the dicts hold them)
    with 0; an ``attention_mask`` is built from the lengths otherwise. Other keys are dropped. max_len is
    the longest sequence, at least ``pad_to_length``, rounded up to ``pad_to_multiple_of``.
    """
    given: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if isinstance(features, SentenceBatch):
        batch = features
    else:
        batch = _sentence_batch(features)
        for key in ("attention_mask", "token_type_ids"):
            if key in features[0]:
                given[key] = _flatten(features, key)
    if not len(batch):
        raise SimCSEError("cannot collate an empty list of features")
    lengths = np.asarray(batch.lengths, dtype=np.int64)
    max_len = max(int(lengths.max()), pad_to_length or 0)
    if pad_to_multiple_of:
        max_len = -(-max_len // pad_to_multiple_of) * pad_to_multiple_of
    shape = (len(batch), batch.num_sent, max_len)
    filled = np.arange(max_len) < lengths[:, None]  # (batch * num_sent, max_len)

    def padded(values: np.ndarray, pad_value: int) -> torch.Tensor:
        out = np.full(filled.shape, pad_value, dtype=np.int64)
        out[filled] = values  # row-major order of the filled cells = the sequences one after the other
        return torch.from_numpy(out).view(shape)

    out = {"input_ids": padded(batch.token_ids, pad_token_id)}
    out["attention_mask"] = padded(given["attention_mask"][0], 0) if "attention_mask" in given else \
        torch.from_numpy(filled.astype(np.int64)).view(shape)
    if "token_type_ids" in given:
        out["token_type_ids"] = padded(given["token_type_ids"][0], 0)
    return out


def _sentence_batch(features: Sequence[dict[str, Any]]) -> SentenceBatch:
    if not features:
        raise SimCSEError("cannot collate an empty list of features")
    num_sent = _num_sent(features[0], 0)
    for index, feature in enumerate(features):
        if _num_sent(feature, index) != num_sent:
            raise SimCSEError(
                f"feature {index} holds {_num_sent(feature, index)} sentences but feature 0 holds {num_sent}; "
                "every example of a batch must come from the same training file"
            )
    values, lengths = _flatten(features, "input_ids")
    return SentenceBatch(token_ids=values, lengths=lengths, num_sent=num_sent)


def _flatten(features: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The key's sequences of all features, concatenated (one numpy conversion per sequence), and their lengths."""
    sequences = [np.asarray(seq, dtype=np.int64).reshape(-1) for feature in features for seq in feature[key]]
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    return (np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)), lengths


def _num_sent(feature: dict[str, Any], index: int) -> int:
    ids = feature.get("input_ids")
    if ids is None or not len(ids) or not all(isinstance(seq, (list, tuple, np.ndarray, torch.Tensor)) for seq in ids):
        raise SimCSEError(
            f"feature {index} must hold input_ids as a list of num_sent token lists (as made by "
            f"tokenize_dataset), got {type(ids).__name__}"
        )
    return len(ids)




def keyed_uniforms(shape: tuple[int, int, int], seed: int, epoch: int, indices: torch.Tensor,
                   draw: int) -> torch.Tensor:
    """(batch, num_sent, length) uniforms in [0, 1), each a hash of (seed, epoch, example index, sentence,
    position, draw): the same number for a token wherever its example lands (which process, which batch
    row, how much padding), so masks do not depend on how a global batch is split across processes."""
    batch, num_sent, length = shape
    key = splitmix64(np.array([(seed * 0x9E3779B9 + epoch) % (1 << 64)], dtype=np.uint64))
    rows = indices.cpu().numpy().astype(np.uint64).reshape(batch, 1, 1)
    x = splitmix64(key ^ (rows * np.uint64(0x51ED27) + np.uint64(1)))
    slot = ((np.arange(num_sent, dtype=np.uint64).reshape(1, num_sent, 1) * np.uint64(8192)
             + np.arange(length, dtype=np.uint64).reshape(1, 1, length)) * np.uint64(4) + np.uint64(draw))
    x = splitmix64(x ^ slot)
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) / float(1 << 53))


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    keys: tuple[int, int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al. 2019, arXiv:1810.04805) for the auxiliary masked-LM loss.

    Each token that is neither padding (``attention_mask`` 0) nor one of ``special_ids`` is chosen with
    probability ``mlm_probability``. Of the chosen tokens 80% become ``mask_token_id``, 10% a uniformly
    random id in [0, vocab_size), 10% stay. Returns new tensors ``(masked_ids, labels)`` shaped like
    ``input_ids``: labels hold the original id at chosen positions and -100 elsewhere. ``input_ids`` is
    not modified. Draws from ``generator`` when given, else from torch's global RNG; with ``keys`` =
    (seed, epoch, example indices) of a (batch, num_sent, length) input, every draw is instead a hash of
    the token's example, sentence and position (:func:`keyed_uniforms`), so W processes mask exactly as
    one process on the whole batch does.
    """
    specials = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, specials)

    draws = iter(range(4))

    def coin(probability: float) -> torch.Tensor:
        if keys is not None:
            return keyed_uniforms(tuple(input_ids.shape), *keys, next(draws)).to(input_ids.device) < probability
        probs = torch.full(input_ids.shape, probability, device=input_ids.device)
        return torch.bernoulli(probs, generator=generator).bool()

    chosen = coin(mlm_probability) & eligible
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    masked_ids = input_ids.clone()
    to_mask = chosen & coin(0.8)
    masked_ids[to_mask] = mask_token_id
    to_random = chosen & ~to_mask & coin(0.5)  # half of the remaining 20%
    if keys is not None:
        every = (keyed_uniforms(tuple(input_ids.shape), *keys, 3) * vocab_size).long().clamp_max(vocab_size - 1)
        random_ids = every.to(input_ids.device)[to_random]
    else:
        random_ids = torch.randint(vocab_size, (int(to_random.sum()),), generator=generator, device=input_ids.device)
    masked_ids[to_random] = random_ids.to(input_ids.dtype)
    return masked_ids, labels


def masked_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, K) long: each example's masked positions (``labels`` (B, N, L) != -100) as indices into its N*L
    tokens, in order, padded with -1 to K, the largest count of the batch. Computed with the batch on the
    host, so the model selects the masked rows on the device without asking it how many there are."""
    chosen = (labels != IGNORE_INDEX).reshape(labels.shape[0], -1)  # (B, N*L)
    counts = chosen.sum(dim=1)
    k = int(counts.max()) if chosen.numel() else 0
    order = torch.sort(chosen.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :k]
    return torch.where(torch.arange(k) < counts.unsqueeze(1), order, -1)


@dataclass
class SimCSECollator:
    """Collate tokenized examples (each holding num_sent sequences) into a training batch.

    Takes the :class:`SentenceBatch` that :class:`TrainingExamples` hands a DataLoader, or a list of
    example dicts. Returns ``input_ids`` and ``attention_mask`` (and ``token_type_ids``, zeros unless the
    examples carry their own, when the tokenizer takes them), each (batch, num_sent, max_len),
    right-padded to the longest sequence of the batch (at least ``pad_to_length``, rounded up to
    ``pad_to_multiple_of``) with the tokenizer's pad token. A batch of 1-sentence examples (unsupervised
    data) becomes num_sent = 2: the same tokens twice, two dropout views in the encoder. With ``do_mlm``
    also ``mlm_input_ids`` and ``mlm_labels`` of the same shape, from :func:`mask_tokens` (special tokens
    of the tokenizer, including its unknown token, and padding are never chosen; each view is masked
    independently; ``input_ids`` is left untouched), and ``mlm_positions`` (:func:`masked_positions`).
    Graded pairs (examples with a ``score``) also give ``scores``, (batch,) float32, which the trainer
    hands to the loss. With ``text_keys`` also ``text_keys``, (batch, num_sent) int64
    (:func:`batch_text_keys`; both views of an unsupervised sentence share its key), which the trainer
    gathers and hands to the loss to mask duplicate texts (``mask_duplicate_texts``); the model ignores
    both.

    ``generator`` makes masking reproducible in tests; leave it None in training, where DataLoader workers
    seed the global RNG differently (a shared generator would give every worker the same masks).
    """

    tokenizer: PreTrainedTokenizerBase
    do_mlm: bool = False
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    generator: torch.Generator | None = None
    pad_to_length: int | None = None
    # Keyed masks (train.py sets mask_seed = --seed; the trainer sets epoch at each epoch): each token's
    # draws are a hash of (seed, epoch, example index, sentence, position), the same whichever process or
    # batch row the example lands in, so DDP masks exactly as one process on the global batch.
    mask_seed: int | None = None
    epoch: int = 0
    text_keys: bool = False

    def __post_init__(self) -> None:
        if self.tokenizer.pad_token_id is None:
            raise _no_pad_token_error(self.tokenizer)
        for name in ("pad_to_multiple_of", "pad_to_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SimCSEError(f"{name} must be a positive integer or None, got {value!r}")
        if self.do_mlm:
            check_mlm_probability(self.mlm_probability)
            if self.tokenizer.mask_token_id is None:
                raise SimCSEError(
                    f"`do_mlm` needs a tokenizer with a mask token, and {self.tokenizer.name_or_path!r} has "
                    "none (decoders such as GPT-2 are not trained with masked LM); drop `do_mlm`"
                )
        self._token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())

    def __call__(self, features: Sequence[dict[str, Any]] | SentenceBatch) -> dict[str, torch.Tensor]:
        batch = pad_sentence_features(features, self.tokenizer.pad_token_id, self.pad_to_multiple_of,
                                      self.pad_to_length)
        if self._token_types and "token_type_ids" not in batch:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if batch["input_ids"].shape[1] == 1:  # unsupervised: two views of each sentence
            batch = {key: value.repeat(1, 2, 1) for key, value in batch.items()}
        scores = _batch_scores(features)
        if scores is not None:
            batch["scores"] = scores
        if self.text_keys:
            keys = batch_text_keys(features)  # (batch, num_sent)
            batch["text_keys"] = keys.repeat(1, 2) if keys.shape[1] == 1 else keys
        if self.do_mlm:
            batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(
                batch["input_ids"],
                batch["attention_mask"],
                mask_token_id=self.tokenizer.mask_token_id,
                vocab_size=len(self.tokenizer),
                special_ids=self.tokenizer.all_special_ids,
                mlm_probability=self.mlm_probability,
                generator=self.generator,
                keys=self._mask_keys(features, batch["input_ids"].shape[0]),
            )
            batch["mlm_positions"] = masked_positions(batch["mlm_labels"])
        return batch

    def _mask_keys(self, features, rows: int) -> tuple[int, int, torch.Tensor] | None:
        indices = getattr(features, "indices", None)
        if self.mask_seed is None or indices is None or len(indices) != rows:
            return None
        return self.mask_seed, self.epoch, torch.from_numpy(np.asarray(indices, dtype=np.int64))
