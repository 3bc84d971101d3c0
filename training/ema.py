"""Exponential moving average of the generator's weights (as in StyleGAN's ``G_ema``), and
batch-norm statistics recomputed for the averaged weights."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]]) -> int:
    """Replace every batch-norm layer's running statistics by those of ``model``'s own
    activations on ``batches`` (each a tuple of forward arguments).

    The EMA copies running statistics collected under the live weights, which do not match
    the averaged ones; this re-estimates them (cumulative average over the batches, as with
    ``momentum=None``) and leaves ``model`` in eval mode. Returns the number of batch-norm
    layers updated (0: nothing to do, the batches are not run).
    """
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    for args in batches:
        model(*args)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()
    return len(norms)


class EMA:
    """Keeps an fp32 copy ``shadow`` with ``shadow ← β·shadow + (1 − β)·model`` after each
    step; buffers (e.g. BatchNorm statistics) are copied. β = 0.5^(1 / half_life_steps).

    Parameters
    ----------
    model : the generator (plain module, e.g. ``g_engine.module``).
    half_life_steps : steps after which an old weight's share has halved.
    """

    def __init__(self, model: nn.Module, half_life_steps: float):
        self.beta = 0.5 ** (1.0 / half_life_steps)
        self.shadow = copy.deepcopy(model).float().eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach().float(), 1 - self.beta)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
