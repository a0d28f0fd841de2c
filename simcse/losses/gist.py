"""GISTEmbed: InfoNCE whose in-batch negatives are filtered by a frozen guide encoder.

Reference: Solatorio (2024), "GISTEmbed: Guided In-sample Selection of Training Negatives for Text
Embedding Fine-tuning", arXiv:2402.16829. sentence-transformers implements it as ``GISTEmbedLoss``
(sentence_transformers/sentence_transformer/losses/gist_embed.py); tests/losses/test_loss_parity_st.py checks
that this loss equals it, values and gradients, on the same embeddings and guide embeddings.

The guide's embeddings of the batch's sentences are computed by the trainer, without gradient, once per
batch (:class:`simcse.modeling.guide.GuideEncoder`, ``train.py --guide_model``), and handed to the loss as
``guide`` (B, 2 + K, G): anchor, positive and the K hard negatives of each example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simcse.errors import SimCSEError
from simcse.losses.checks import check_flag, check_non_negative, check_temperature
from simcse.losses.ops import duplicate_mask
from simcse.losses.registry import ContrastiveLoss, flatten_hard_negatives, register_loss

__all__ = ["GISTLoss", "gist_loss"]

MARGIN_STRATEGIES = ("absolute", "relative")


def _check_hparams(temp: float, margin: float, margin_strategy: str) -> None:
    check_temperature(temp)
    check_non_negative("margin", margin, "how far below the guide's positive similarity a negative stays a "
                       "negative; 0 removes only negatives the guide scores above the positive")
    if margin_strategy not in MARGIN_STRATEGIES:
        raise SimCSEError(f"margin_strategy must be one of {', '.join(MARGIN_STRATEGIES)}, got {margin_strategy!r}")


def gist_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z3: torch.Tensor | None,
    guide: torch.Tensor,
    *,
    temp: float = 0.01,
    margin: float = 0.0,
    margin_strategy: str = "absolute",
    contrast_anchors: bool = True,
    contrast_positives: bool = True,
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The GISTEmbed loss of embeddings and guide embeddings (see :class:`GISTLoss`). ``keys`` (B, 2 + K):
    candidates with the text of a row's pair are removed as well as those the guide filters."""
    _check_hparams(temp, margin, margin_strategy)
    batch = z1.shape[0]
    x, y = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)  # (B, H)
    gx, gy = F.normalize(guide[:, 0], dim=-1), F.normalize(guide[:, 1], dim=-1)  # (B, G)
    guided_positive = (gx * gy).sum(-1, keepdim=True)  # (B, 1): the guide's cos(anchor_i, positive_i)
    if margin_strategy == "absolute":
        threshold = guided_positive - margin
    else:
        threshold = guided_positive - guided_positive.abs() * margin
    eye = torch.eye(batch, dtype=torch.bool, device=z1.device)

    def filtered(similarities: torch.Tensor, guided: torch.Tensor, *roles: int,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        # A candidate the guide scores above the threshold is a likely false negative: drop it; so is one
        # with the text of the row's anchor or positive, given keys (key columns ``roles``).
        dropped = guided > threshold
        if keep is not None:
            dropped = dropped & ~keep
        if keys is not None:
            dropped = dropped | duplicate_mask(keys, *roles)
        return similarities.masked_fill(dropped, float("-inf"))

    blocks = [filtered(x @ y.T, gx @ gy.T, 1, keep=eye)]  # (B, B): the positive itself is never dropped
    if contrast_anchors:
        blocks.append(filtered(x @ x.T, gx @ gx.T, 0).masked_fill(eye, float("-inf")))  # (B, B), no self-pair
    if contrast_positives:
        blocks.append(filtered(y @ y.T, gy @ gy.T, 1).masked_fill(eye, float("-inf")))  # (B, B)
    if z3 is not None:
        n = F.normalize(flatten_hard_negatives(z3), dim=-1)  # (K·B, H), k-major
        gn = F.normalize(flatten_hard_negatives(guide[:, 2:]), dim=-1)  # (K·B, G)
        blocks.append(filtered(x @ n.T, gx @ gn.T, *range(2, guide.shape[1])))  # (B, K·B)
    logits = torch.cat(blocks, dim=1) / temp
    return F.cross_entropy(logits, torch.arange(batch, device=logits.device))


@register_loss("gist", flags={"temp": "temp", "margin": "margin"})
class GISTLoss(ContrastiveLoss):
    """GISTEmbed: InfoNCE over in-batch candidates, minus those a frozen guide encoder ranks above the positive.

    With x, y, n the normalised anchors, positives and hard negatives (the K·B hard negatives flattened
    k-major) and gx, gy, gn the same sentences' normalised GUIDE embeddings, the guide's positive
    similarity of anchor i is g_i = gx_i·gy_i and its threshold t_i = g_i − m (``absolute``) or
    g_i − |g_i|·m (``relative``). Row i of the logits is

        [ x_i·y_j , x_i·x_j (j ≠ i) , y_i·y_j (j ≠ i) , x_i·n_j ] / τ

    where every candidate c whose guide similarity to the row's sentence (gx_i·gy_j, gx_i·gx_j, gy_i·gy_j,
    gx_i·gn_j) exceeds t_i is removed (logit −∞), except the positive y_i itself; the loss is the mean
    cross-entropy with target y_i. A candidate the guide finds as similar to the anchor as the true
    positive is most likely a false negative (a paraphrase of the anchor elsewhere in the batch); plain
    InfoNCE would push it away. The anchor-anchor and positive-positive blocks are the paper's (they
    also push apart the sentences of one side); both can be switched off. Given ``keys``
    (``--mask_duplicate_texts``), a candidate with the text of row i's anchor or positive is removed too,
    whatever the guide says.

    Hyperparameters:
        temp: τ > 0; 0.01 in the paper and in sentence-transformers.
        margin: m ≥ 0, how far below the guide's positive similarity a candidate must stay to remain a
            negative (0: drop only candidates the guide scores above the positive).
        margin_strategy: ``absolute`` (t = g − m) or ``relative`` (t = g − |g|·m).
        contrast_anchors, contrast_positives: include the anchor-anchor / positive-positive blocks (True).

    Takes ``guide`` (B, 2 + K, G), computed without gradient (``train.py --guide_model``), and hard
    negatives ``z3`` (B, H) or (B, K, H).

    Reference: Solatorio (2024), arXiv:2402.16829. Equal to sentence-transformers' ``GISTEmbedLoss``
    (temperature τ) given the same guide embeddings (tests/losses/test_loss_parity_st.py).
    """

    supports_hard_negatives = True
    needs_guide = True
    masks_duplicates = True

    def __init__(self, temp: float = 0.01, margin: float = 0.0, margin_strategy: str = "absolute",
                 contrast_anchors: bool = True, contrast_positives: bool = True) -> None:
        super().__init__()
        _check_hparams(temp, margin, margin_strategy)
        self.temp = float(temp)
        self.margin = float(margin)
        self.margin_strategy = margin_strategy
        self.contrast_anchors = check_flag("contrast_anchors", contrast_anchors)
        self.contrast_positives = check_flag("contrast_positives", contrast_positives)

    def compute(self, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor | None, *,
                guide: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        return gist_loss(z1, z2, z3, guide, temp=self.temp, margin=self.margin, margin_strategy=self.margin_strategy,
                         contrast_anchors=self.contrast_anchors, contrast_positives=self.contrast_positives,
                         keys=keys)
