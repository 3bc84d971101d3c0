"""Facke's CVAE-GAN (seed 002 §2.2.5): "we simply replace the generator in CGAN with the
CVAE model" — the CVAE generator (:mod:`training.networks.cvae`) inside SimSwap's
adversarial setup, without CVAE-GAN's classifier (Bao et al.; Facke leaves it out):
L = λ_Id L_Id + λ_Recon L_Recon + L_Adv + λ_GP L_GP + λ_wFM L_wFM (Facke eq. 2–8) + λ_KL
D_KL (eq. 9), with SimSwap's two batch-norm patch discriminators, hinge loss, gradient
penalty (lazy Dreg) and weak feature matching.

Data: with Identity Grouping by default — Facke Table 1's CVAE-GAN-IG: b identities drawn
uniformly, two images of each for an intra-ID batch (§2.1.4), intra-ID and inter-ID batches
alternating (§3). Without IG: ``data.draw: images`` and ``data.intra: same_image`` (the
original SimSwap intra-ID batch, source = target). λ_KL = 0.01 is the project's choice
(Facke gives none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from training.losses import kl_to_standard_normal
from training.networks.cvae import CVAEGeneratorConfig
from training.networks.discriminator import DiscriminatorConfig
from training.swappers.base import DataRecipeConfig, PhaseResult, param_dtype
from training.swappers.cvae import DEBUG_CVAE
from training.swappers.simswap import (
    SimSwapArchConfig,
    SimSwapConfig,
    SimSwapObjective,
    SimSwapWeightsConfig,
)

if TYPE_CHECKING:
    from training.data import PairBatch


class CVAEGANArchConfig(SimSwapArchConfig, CVAEGeneratorConfig):
    """One width of the CVAE generator with SimSwap's discriminator (2 scales, 4 layers,
    batch norm)."""


class CVAEGANWeightsConfig(SimSwapWeightsConfig):
    """SimSwap's weights (Facke eq. 2) plus the KL weight of the CVAE's latent."""

    kl: float = Field(0.01, ge=0, description="λ_KL, KL to N(0, I) (Facke eq. 9).")


class CVAEGANConfig(SimSwapConfig):
    """``train.cvae_gan``: SimSwap's section with the CVAE generator; Identity Grouping on
    (Facke Table 1's CVAE-GAN-IG)."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(
            draw="identities", pairing="alternate", intra="same_identity"
        ),
        description="How training pairs are drawn (Identity Grouping).",
    )
    weights: CVAEGANWeightsConfig = Field(default_factory=CVAEGANWeightsConfig)
    debug: CVAEGANArchConfig = Field(
        default_factory=lambda: CVAEGANArchConfig(
            **DEBUG_CVAE,
            discriminator=DiscriminatorConfig(
                base_channels=16, max_channels=64, num_scales=2, norm="batch"
            ),
        )
    )
    paper: CVAEGANArchConfig = Field(default_factory=CVAEGANArchConfig)


class CVAEGANObjective(SimSwapObjective):
    """SimSwap's phases (eq. 2–8) on the CVAE generator, plus λ_KL D_KL in Gmain."""

    G_STATS: ClassVar[tuple[str, ...]] = (*SimSwapObjective.G_STATS, "Loss/G/kl")

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = param_dtype(g_engine.module)
        swap, (mu, logvar) = g_engine(b.target.to(dtype), b.z_id.to(dtype))
        terms = self.simswap_terms(swap, d_module, b)
        kl = kl_to_standard_normal(mu.float(), logvar.float())
        terms["Loss/G/total"] = terms["Loss/G/total"] + self.w.kl * kl
        terms["Loss/G/kl"] = kl
        return PhaseResult(terms["Loss/G/total"], terms), swap.detach()
