"""The frozen guide encoder of guided losses (GISTEmbed, arXiv:2402.16829): embeddings of a training
batch's sentences, without gradient, once per batch.

The guide is any model directory loadable as a sentence encoder: a sentence-transformers model (a
directory with ``modules.json``: its own pooling and normalisation) or a Hugging Face / SimCSE checkpoint
pooled with ``pooler_type`` (as :func:`simcse.modeling.encoder.build_encoder` loads it for evaluation).

The batch arrives as the training tokenizer's ids. When the guide's tokenizer has the same vocabulary,
those ids are fed to it directly; otherwise each sentence is decoded (special tokens dropped) and
re-tokenized by the guide's tokenizer, as sentence-transformers' ``GISTEmbedLoss`` does: one transfer of
the batch's ids to the host, the one host sync of such a guided step (the tokenizer runs there). The
decoded text is the training tokenizer's view of the sentence: lower-cased by an uncased tokenizer, cut
at ``--max_seq_length`` tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from simcse.errors import SimCSEError

__all__ = ["GuideEncoder"]


class GuideEncoder:
    """``guide(inputs) -> (B, N, G)``: the guide's embeddings of a collated batch (``input_ids`` and
    ``attention_mask`` of shape (B, N, L), N sentences per example), in float32, without gradient.

    path: the guide model directory (or hub id). train_tokenizer: the tokenizer that made the batch's ids.
    pooler_type: pooling of a non-sentence-transformers guide (default ``avg``). max_length: the guide's
    truncation when it re-tokenizes (default: its model's limit).
    """

    def __init__(self, path: str, train_tokenizer, device: torch.device | str = "cpu", pooler_type: str = "avg",
                 max_length: int | None = None):
        self.path = str(path)
        self.device = torch.device(device)
        self.train_tokenizer = train_tokenizer
        if (Path(path) / "modules.json").is_file():
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device=str(self.device))
            model.eval()
            self.tokenizer = model.tokenizer
            self.max_length = max_length or model.max_seq_length

            def embed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]
        else:
            from simcse.modeling.encoder import build_encoder

            encoder = build_encoder(str(path), pooler_type, device=str(self.device))
            self.tokenizer = encoder.tokenizer
            self.max_length = max_length or getattr(self.tokenizer, "model_max_length", None)
            embed = encoder.embed
        if self.tokenizer is None:
            raise SimCSEError(f"guide model {self.path!r} has no tokenizer; give a directory that holds one")
        self._embed = embed
        self.same_vocabulary = self.tokenizer.get_vocab() == train_tokenizer.get_vocab()

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        batch, num_sent, length = input_ids.shape
        ids = input_ids.reshape(batch * num_sent, length)
        mask = attention_mask.reshape(batch * num_sent, length)
        if not self.same_vocabulary:
            # Decoding needs the ids on the host: one transfer for the batch (ids and each row's length
            # together), where a length per row would wait for the device once per sentence.
            rows = torch.cat([ids, mask.sum(dim=1, keepdim=True).to(ids.dtype)], dim=1).tolist()
            texts = self.train_tokenizer.batch_decode([row[: row[-1]] for row in rows], skip_special_tokens=True)
            encoded = self.tokenizer(texts, padding=True, truncation=self.max_length is not None,
                                     max_length=self.max_length, return_tensors="pt")
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
        # non_blocking: a re-tokenized batch goes up without waiting for the device (a blocking copy would)
        embeddings = self._embed(ids.to(self.device, non_blocking=True),
                                 mask.to(self.device, non_blocking=True)).float()  # (B·N, G)
        return embeddings.reshape(batch, num_sent, -1)
