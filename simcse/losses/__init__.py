"""Contrastive losses of sentence embeddings, one module per loss family, found by name in a registry.

Adding a loss: write a module holding a ``@register_loss("name")`` :class:`ContrastiveLoss` subclass and
add one import line below; importing the module registers the loss.
"""

from __future__ import annotations

from simcse.losses.registry import LOSSES as LOSSES
from simcse.losses.registry import ContrastiveLoss as ContrastiveLoss
from simcse.losses.registry import build_loss as build_loss
from simcse.losses.registry import loss_kwargs_of as loss_kwargs_of
from simcse.losses.registry import register_loss as register_loss

# One line per loss module (importing it registers its losses).
from simcse.losses.infonce import InfoNCELoss as InfoNCELoss  # isort: skip
