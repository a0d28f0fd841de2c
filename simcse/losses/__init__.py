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
from simcse.losses.nt_xent import NTXentLoss as NTXentLoss  # isort: skip
from simcse.losses.dcl import DCLLoss as DCLLoss, DCLPosLoss as DCLPosLoss  # isort: skip
from simcse.losses.dhel import DHELLoss as DHELLoss, KCLLoss as KCLLoss  # isort: skip
from simcse.losses.align_uniform import AlignUniformLoss as AlignUniformLoss  # isort: skip
from simcse.losses.margin import MATLoss as MATLoss, METLoss as METLoss, MPTLoss as MPTLoss  # isort: skip
from simcse.losses.vicreg import VICRegLoss as VICRegLoss  # isort: skip
from simcse.losses.arccon import ArcConLoss as ArcConLoss  # isort: skip
from simcse.losses.graded import AnglELoss as AnglELoss, CoSENTLoss as CoSENTLoss  # isort: skip
from simcse.losses.gist import GISTLoss as GISTLoss  # isort: skip
