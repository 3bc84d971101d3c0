"""Exponential moving average of the generator's weights (as in StyleGAN's ``G_ema``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


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
