"""The loss a training run's flags ask for, built once (when the arguments are parsed) and passed on.

:func:`loss_flags` maps train.py's loss flags to constructor arguments, as the losses declared them at
registration (``@register_loss(name, flags=...)``); :func:`loss_kwargs` applies the flags the user gave
and ``--loss_kwargs`` on top; :func:`build_training_loss` builds the registered loss, tiles it
(``--loss_tile_size``) and wraps it in the Matryoshka wrappers the flags ask for. ``args`` is a
:class:`simcse.training.arguments.ModelArguments`.

Imports: the losses and the foundation.
"""

from __future__ import annotations

import json

from simcse.errors import SimCSEError
from simcse.losses import LOSSES, build_loss, loss_kwargs_of
from simcse.losses.matryoshka import Matryoshka2dLoss, MatryoshkaLoss
from simcse.losses.tiled import TiledLoss


def loss_flags() -> dict[str, str]:
    """train.py's loss hyperparameter flags -> the constructor argument they set: the union of what each
    registered loss declared (``@register_loss(name, flags=...)``). Every one defaults to None ("not
    given"), so a flag the chosen loss does not take is an error only when given."""
    return {flag: argument for cls in LOSSES.values() for flag, argument in cls.cli_flags.items()}


def loss_kwargs(args) -> dict:
    """The chosen loss's hyperparameters from the flags the user GAVE (--temp, --hard_negative_weight,
    --margin, --loss_lambda, --align_alpha, --uniform_t), then --loss_kwargs JSON on top; the others
    keep the loss's own defaults. A flag given for a loss that does not take it is an error (it would
    otherwise be silently ignored: e.g. --hard_negative_weight with dcl)."""
    valid = loss_kwargs_of(args.loss_type)
    own = LOSSES[args.loss_type].cli_flags
    kwargs = {}
    for flag in loss_flags():
        value = getattr(args, flag)
        if value is None:  # not given: the loss's default
            continue
        if flag not in own:
            raise SimCSEError(f"`{flag}` does not apply to `loss_type` {args.loss_type} "
                              f"(its flags: {', '.join(f'`{f}`' for f in own) or 'none'}; every hyperparameter: "
                              f"{', '.join(valid) or 'none'}, through `loss_kwargs`); drop the flag")
        kwargs[own[flag]] = value
    if args.loss_kwargs:
        try:
            extra = json.loads(args.loss_kwargs)
        except json.JSONDecodeError as err:
            raise SimCSEError(f"`loss_kwargs` {args.loss_kwargs!r} is not valid JSON ({err.msg}); "
                              'write it like \'{"temp": 0.1}\'') from None
        if not isinstance(extra, dict):
            raise SimCSEError(f"`loss_kwargs` must be a JSON object, got {args.loss_kwargs!r}")
        unknown = sorted(set(extra) - set(valid))
        if unknown:
            raise SimCSEError(f"`loss_kwargs` has {unknown} that `loss_type` {args.loss_type} does not take; "
                              f"valid: {', '.join(valid) or 'none'}")
        clash = sorted(set(extra) & set(kwargs))
        if clash:
            raise SimCSEError(f"`loss_kwargs` sets {clash}, which a flag also sets; give each value once")
        kwargs.update(extra)
    return kwargs

def matryoshka_settings(args) -> tuple[list[int], list[float] | None] | None:
    """(dims, weights) of --matryoshka_dims / --matryoshka_weights, or None without Matryoshka."""
    if args.matryoshka_dims is None:
        if args.matryoshka_weights is not None:
            raise SimCSEError("`matryoshka_weights` needs `matryoshka_dims` (the widths they weight)")
        return None
    try:
        dims = [int(d) for d in str(args.matryoshka_dims).split(",") if d.strip()]
        weights = None if args.matryoshka_weights is None else [
            float(w) for w in str(args.matryoshka_weights).split(",") if w.strip()]
    except ValueError:
        raise SimCSEError(f"`matryoshka_dims` {args.matryoshka_dims!r} / `matryoshka_weights` "
                          f"{args.matryoshka_weights!r}: write comma-separated numbers, e.g. 384,128,64") from None
    return dims, weights  # checked by MatryoshkaLoss when the loss is built


def wrap_loss(args, loss):
    """``loss`` inside the Matryoshka wrappers the flags ask for: widths (--matryoshka_dims), then layers
    (--matryoshka_layers, with --matryoshka_2d_kwargs)."""
    matryoshka = matryoshka_settings(args)
    if matryoshka is not None:
        loss = MatryoshkaLoss(loss, *matryoshka)
    if args.matryoshka_layers is None:
        if args.matryoshka_2d_kwargs is not None:
            raise SimCSEError("`matryoshka_2d_kwargs` needs `matryoshka_layers` (2D Matryoshka over layers)")
        return loss
    try:
        extra = json.loads(args.matryoshka_2d_kwargs) if args.matryoshka_2d_kwargs else {}
    except json.JSONDecodeError as err:
        raise SimCSEError(f"`matryoshka_2d_kwargs` {args.matryoshka_2d_kwargs!r} is not valid JSON "
                          f"({err.msg})") from None
    valid = ("last_layer_weight", "prior_layers_weight", "kl_div_weight", "kl_temperature")
    if not isinstance(extra, dict) or set(extra) - set(valid):
        raise SimCSEError(f"`matryoshka_2d_kwargs` must be a JSON object with keys among {', '.join(valid)}; "
                          f"got {args.matryoshka_2d_kwargs!r}")
    return Matryoshka2dLoss(loss, n_layers_per_step=args.matryoshka_layers, **extra)


def model_temp(args) -> float:
    """The temperature saved in the model config: the loss's τ when it has one, else SimCSE's 0.05."""
    return float(loss_kwargs(args).get("temp", loss_kwargs_of(args.loss_type).get("temp", 0.05)))


def build_training_loss(args):
    """The run's loss: the registered ``--loss_type`` with the flags' hyperparameters, computed in tiles
    with ``--loss_tile_size``, in the Matryoshka wrappers the flags ask for."""
    loss = build_loss(args.loss_type, **loss_kwargs(args))
    if args.loss_tile_size is not None:
        loss = TiledLoss(loss, args.loss_tile_size)
    return wrap_loss(args, loss)
