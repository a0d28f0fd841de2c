"""LoRA adapters on the backbone (Hu et al. 2021, arXiv:2106.09685) through ``peft``.

The adapters are injected into the backbone module in place (``peft.inject_adapter_in_model``), so the
wrapper, its heads, the trainer, DDP and gradient caching see one ordinary module: a targeted
``nn.Linear`` (or GPT-2 ``Conv1D``) becomes a peft LoRA layer whose ``base_layer`` holds the frozen weight
and whose ``lora_A`` / ``lora_B`` are trained (W x + (alpha / r) B A dropout(x)). Everything of the
backbone but the adapters is frozen; the SimCSE MLP head, when the pooler has one, trains in full.

The settings are saved in ``config.json`` (``simcse_lora``), so a checkpoint rebuilds its adapters when it
loads (resume, the tool, evaluation) and :func:`merge_lora` can fold them into a plain model for
``simcse_to_huggingface.py``: W <- W + (alpha / r) B A, computed by peft's own ``merge``.
LoRA dropout is an ``nn.Dropout``: gradient caching replays it as it replays the model's dropout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from simcse.errors import SimCSEError

# Families peft has no default for: their attention query / value projections.
_EXTRA_TARGETS = {"mpnet": ["q", "v"], "distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"]}


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]

    def to_json(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise SimCSEError("`lora_r` needs the peft package: pip install peft (or pip install -e .[lora])") from None


def default_target_modules(model_type: str) -> tuple[str, ...]:
    """The attention projections LoRA adapts by default for a family (peft's table, plus a few of ours)."""
    _require_peft()
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    targets = defaults.get(model_type) or _EXTRA_TARGETS.get(model_type)
    if not targets:
        raise SimCSEError(f"no default LoRA target modules for model type {model_type!r}; name them with "
                          "`lora_target_modules` (e.g. q_proj,v_proj: the names of the backbone's Linear layers)")
    return tuple(targets)


def lora_settings(model_type: str, r: int | None, alpha: float | None = None, dropout: float = 0.0,
                  target_modules: str | None = None) -> LoraSettings | None:
    """The LoRA settings of a run (None without ``lora_r``); alpha defaults to 2 r, targets to the family's."""
    if r is None:
        if alpha is not None or target_modules:
            raise SimCSEError("`lora_alpha` / `lora_target_modules` need `lora_r` (the adapters' rank)")
        return None
    if r < 1:
        raise SimCSEError(f"`lora_r` must be a positive rank, got {r}")
    if not 0 <= dropout < 1:
        raise SimCSEError(f"`lora_dropout` must be in [0, 1), got {dropout}")
    _require_peft()
    targets = tuple(t.strip() for t in target_modules.split(",") if t.strip()) if target_modules else \
        default_target_modules(model_type)
    return LoraSettings(r=r, alpha=float(alpha if alpha is not None else 2 * r), dropout=float(dropout),
                        target_modules=targets)


def saved_settings(config) -> LoraSettings | None:
    saved = getattr(config, "simcse_lora", None)
    return None if not saved else LoraSettings(saved["r"], saved["alpha"], saved["dropout"],
                                               tuple(saved["target_modules"]))


def inject(backbone: nn.Module, settings: LoraSettings) -> None:
    """Put LoRA adapters into ``backbone`` in place; a target name matching no layer is an error."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    try:
        inject_adapter_in_model(config, backbone)
    except ValueError as err:
        names = sorted({name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)})
        why = str(err).splitlines()[0][:80]
        raise SimCSEError(f"`lora_target_modules` {','.join(settings.target_modules)} matches no layer of this "
                          f"backbone ({why}); its Linear layers: {', '.join(names)}") from None


def has_adapters(module: nn.Module) -> bool:
    return any("lora_" in name for name, _ in module.named_parameters())


def apply_lora(model, settings: LoraSettings) -> tuple[int, int]:
    """Adapt ``model.backbone`` with ``settings``, freeze the rest of the backbone, record the settings in
    ``model.config.simcse_lora``. Returns (trainable parameters, all parameters) of the whole model."""
    saved = saved_settings(model.config)
    if saved is not None and has_adapters(model.backbone):  # a LoRA checkpoint, adapters rebuilt on load
        if saved != settings:
            raise SimCSEError(f"the model already holds LoRA adapters {saved.to_json()}; train it with the same "
                              "`lora_r` / `lora_alpha` / `lora_dropout` / `lora_target_modules`, or merge them "
                              "first (simcse_to_huggingface.py) and start new ones from the merged model")
    else:
        inject(model.backbone, settings)
        model.config.simcse_lora = settings.to_json()
    for name, parameter in model.backbone.named_parameters():
        parameter.requires_grad = "lora_" in name
    return count_parameters(model)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def rebuild_adapters(model) -> None:
    """Called by the wrapper's constructor: a config naming LoRA settings gets its adapters back (their
    weights then load from the checkpoint like any other)."""
    settings = saved_settings(model.config)
    if settings is not None:
        inject(model.backbone, settings)


@torch.no_grad()
def merge_lora(model) -> None:
    """Fold every adapter into its base weight and put the plain layer back (peft's merge, so Conv1D and
    scaling follow peft exactly); afterwards ``model`` holds no adapters and ``config.simcse_lora`` is gone."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if hasattr(model.config, "simcse_lora"):
        del model.config.simcse_lora
