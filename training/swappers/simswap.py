"""SimSwap (Chen et al. 2020; Facke §2.1.3, seed 002): encoder, ID-injection module and
decoder trained with L = λ_Id L_Id + λ_Recon L_Recon + L_Adv + λ_GP L_GP + λ_wFM L_wFM
(eq. 2), L_Recon on intra-ID pairs only, L_GP as a lazy Dreg phase."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from infra.config import StrictConfig
from training.losses import (
    gradient_penalty,
    hinge_g_loss,
    identity_loss,
    masked_l1,
    weak_feature_matching,
)
from training.networks.discriminator import DiscriminatorConfig, logits
from training.networks.simswap import SimSwapGeneratorConfig
from training.swappers.base import (
    ArchConfig,
    DataRecipeConfig,
    Objective,
    OptimizerConfig,
    PhaseResult,
    SwapperConfig,
    param_dtype,
    refuse,
)

if TYPE_CHECKING:
    from training.data import PairBatch


class SimSwapArchConfig(ArchConfig, SimSwapGeneratorConfig):
    """One width of the SimSwap generator and its discriminator: as released
    (``fs_networks.Discriminator`` run on the image and on its 2× downsampled copy), 4
    stride-2 convs (64 → 512 channels), batch norm, padding 1, 2 scales."""

    discriminator: DiscriminatorConfig = Field(
        default_factory=lambda: DiscriminatorConfig(num_layers=4, num_scales=2, norm="batch"),
        description="SimSwap's two patch discriminators (D1, D2).",
    )


class SimSwapWeightsConfig(StrictConfig):
    """SimSwap loss, Facke eq. 2 (seed 002 §2.1.3)."""

    id: float = Field(30.0, ge=0, description="λ_Id, eq. 3.")
    rec: float = Field(10.0, ge=0, description="λ_Recon, L1 on intra-ID batches, eq. 4.")
    gp: float = Field(1e-5, ge=0, description="λ_GP, gradient penalty, eq. 7.")
    wfm: float = Field(10.0, ge=0, description="λ_wFM, weak feature matching, eq. 8.")
    wfm_from_layer: int = Field(
        -3, description="First discriminator layer of eq. 8 (negative: from the end)."
    )


class SimSwapConfig(SwapperConfig):
    """``train.simswap``, data as the 2022 release: intra-ID and inter-ID batches alternate
    (``train.py``: intra on even steps, inter by shuffling the batch's sources), each batch
    drawn over identities with two images of each (``data/data_loader_Swapping.py`` indexes
    identity folders and picks two images at random) — Facke's Identity Grouping (§2.1.4).
    Here the two images differ whenever the identity has two, and an inter-ID batch pairs
    each target with another drawn identity (a cyclic shift, where the release's shuffle
    leaves some pairs with their own identity): the project's choices. ``data.intra:
    same_image`` gives the paper's intra-ID batches (source = target; Facke §2.1.4 "in
    original SimSwap, intra-ID batches take exactly the same source face and target face")."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(
            draw="identities", pairing="alternate", intra="same_identity"
        ),
        description="How training pairs are drawn.",
    )
    weights: SimSwapWeightsConfig = Field(default_factory=SimSwapWeightsConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(betas=(0.0, 0.99)),
        description="Adam lr 4e-4, β (0, 0.99), ε 1e-8 for G and D (release "
        "models/projected_model.py).",
    )
    debug: SimSwapArchConfig = Field(
        default_factory=lambda: SimSwapArchConfig(
            image_size=64,
            base_channels=16,
            max_channels=64,
            num_down=3,
            id_blocks=2,
            discriminator=DiscriminatorConfig(
                base_channels=16, max_channels=64, num_scales=2, norm="batch"
            ),
        )
    )
    paper: SimSwapArchConfig = Field(default_factory=SimSwapArchConfig)

    @property
    def has_d_regularization(self) -> bool:
        return self.weights.gp > 0

    def check_recipe(self) -> None:
        refuse(
            self.weights.rec > 0 and not self.data.has_intra,
            "the reconstruction loss (weights.rec > 0) fires on intra-ID pairs "
            "only; data.pairing=mixed with same_ratio=0 never draws one (use "
            "pairing=alternate, raise same_ratio, or set weights.rec=0)",
        )


class SimSwapObjective(Objective):
    """SimSwap, Facke eq. 2–8: identity, L1 reconstruction on intra-ID pairs, hinge
    adversarial, weak feature matching; gradient penalty in the lazy Dreg phase."""

    G_STATS: ClassVar[tuple[str, ...]] = (
        "Loss/G/total",
        "Loss/G/adv",
        "Loss/G/id",
        "Loss/G/rec",
        "Loss/G/wfm",
    )

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = param_dtype(g_engine.module)
        swap, _ = g_engine(b.target.to(dtype), b.z_id.to(dtype))
        terms = self.simswap_terms(swap, d_module, b)
        return PhaseResult(terms["Loss/G/total"], terms), swap.detach()

    def simswap_terms(self, swap: torch.Tensor, d_module, b: PairBatch) -> dict[str, torch.Tensor]:
        """Eq. 2's generator terms of ``swap`` (B, 3, S, S) by statistic name, the weighted
        sum under ``Loss/G/total``."""
        d_dtype = param_dtype(d_module)
        feats_fake = d_module(swap.to(d_dtype))
        with torch.no_grad():
            feats_real = d_module(b.target.to(d_dtype))
        adv = hinge_g_loss([o.float() for o in logits(feats_fake)])
        idl = identity_loss(self.id_encoder(swap.float()), b.z_id.float())
        rec = masked_l1(swap.float(), b.target.float(), b.same_identity)
        wfm = weak_feature_matching(
            [[f.float() for f in s] for s in feats_fake],
            [[f.float() for f in s] for s in feats_real],
            self.w.wfm_from_layer,
        )
        total = adv + self.w.id * idl + self.w.rec * rec + self.w.wfm * wfm
        return dict(zip(SimSwapObjective.G_STATS, (total, adv, idl, rec, wfm), strict=True))

    def d_regularization_loss(self, d_engine, b: PairBatch, swap: torch.Tensor, interval: int):
        if self.w.gp == 0:
            return None
        dtype = param_dtype(d_engine.module)
        # Through the plain module: the engine's forward hooks refuse the inner
        # autograd.grad; the loop then calls d_engine.backward on the penalty.
        d = d_engine.module
        gp = gradient_penalty(lambda x: logits(d(x)), b.target.to(dtype), swap.to(dtype))
        return PhaseResult(self.w.gp * interval * gp, {"Loss/D/gp": gp})
