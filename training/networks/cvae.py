"""Facke's CVAE generator (seed 002 §2.2.2–2.2.3): SimSwap's encoder, ID-injection module
and decoder with the two components Facke adds (§2.2.4, Fig. 2): a convolutional mean and
log-variance head on the encoder's output — "we turned the linear layers before
reparameterization into convolutional ones" (§2.2.3), giving a 2-D latent — and the
reparameterisation z = μ + σ·ε, ε ~ N(0, I); the ID blocks then AdaIN the identity vector
into the sampled latent (§2.2.3) and the decoder renders it.

The condition is the source identity vector, injected by the ID blocks (§2.2.3); Facke's
§2.2.2 wording also feeds the source image to the encoder, which its 2-D-latent network
(§2.2.3, Fig. 2) replaces by the ID vector, as this module does. The heads are 3×3
convolutions keeping the bottleneck width (the kernel and width are not given: the
project's choice). In eval mode the latent is the mean μ unless ``eval_latent: sample``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from training.networks.simswap import SimSwapGenerator, SimSwapGeneratorConfig


class CVAEGeneratorConfig(SimSwapGeneratorConfig):
    """Architecture of :class:`CVAEGenerator`: SimSwap's widths plus the latent's use at
    evaluation. Facke trains at 224 px with SimSwap's network (§3); 256 px is this
    project's default (as for SimSwap)."""

    eval_latent: Literal["mean", "sample"] = Field(
        "mean",
        description="Latent in eval mode: the posterior mean μ (no sampling), or a sample "
        "μ + σ·ε from the global torch RNG.",
    )


class CVAEGenerator(SimSwapGenerator):
    """``forward(target, z_id)``: target (B, 3, S, S) in [-1, 1], z_id (B, D) →
    (swap (B, 3, S, S) in [-1, 1], (μ, log σ²) each (B, C, S/2^n, S/2^n) float).

    Training mode samples the latent; eval mode uses μ unless ``cfg.eval_latent`` is
    ``sample``. ValueError on other input shapes.
    """

    def __init__(self, cfg: CVAEGeneratorConfig, id_dim: int):
        super().__init__(cfg, id_dim)
        c = cfg.channels[-1]
        self.mean = nn.Conv2d(c, c, 3, padding=1)
        self.logvar = nn.Conv2d(c, c, 3, padding=1)

    def latent(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, μ, log σ²) of encoder features ``h``: z = μ + exp(½ log σ²)·ε when sampling
        (training, or ``eval_latent: sample``), else z = μ."""
        # log σ² clamped to [-30, 20] so exp() cannot overflow early in training
        mu, logvar = self.mean(h), self.logvar(h).clamp(-30.0, 20.0)
        if not (self.training or self.cfg.eval_latent == "sample"):
            return mu, mu, logvar
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu), mu, logvar

    def forward(
        self, target: torch.Tensor, z_id: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        self.check_inputs(target, z_id)
        z, mu, logvar = self.latent(self.encode(target))
        return self.decode(self.inject(z, z_id)), (mu, logvar)
