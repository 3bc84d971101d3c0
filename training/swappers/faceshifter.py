"""FaceShifter (Li et al. 2020; FaceShifter thesis §4.2, seed 003): AEI-Net trained with
L = L_adv + λ_id L_id + λ_att L_att + λ_rec L_rec (eq. 4.12), reconstruction when X_s = X_t
(eq. 4.11)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field
from torch import nn

from infra.config import StrictConfig
from training.losses import attribute_loss, hinge_g_loss, identity_loss, reconstruction_loss
from training.networks.aei_net import AEINetConfig
from training.networks.discriminator import DiscriminatorConfig, logits
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


class AEINetArchConfig(ArchConfig, AEINetConfig):
    """One width of AEI-Net and its multi-scale discriminator (FaceShifter and GHOST)."""


#: The ``debug`` width shared by AEI-Net and GHOST: 64 px, 8 → 64 channels, a 2-scale D.
DEBUG_AEI = AEINetArchConfig(
    image_size=64,
    base_channels=8,
    max_channels=64,
    discriminator=DiscriminatorConfig(base_channels=16, max_channels=64, num_scales=2),
)


class FaceShifterWeightsConfig(StrictConfig):
    """FaceShifter eq. 4.12 (thesis: λ_att = λ_rec = 10, λ_id = 5)."""

    adv: float = Field(1.0, ge=0, description="λ_adv, hinge adversarial term (eq. 4.8).")
    id: float = Field(5.0, ge=0, description="λ_id, 1 − cos identity term (eq. 4.9).")
    att: float = Field(10.0, ge=0, description="λ_att, attribute L2 term (eq. 4.10).")
    rec: float = Field(10.0, ge=0, description="λ_rec, reconstruction when X_s = X_t (eq. 4.11).")


class FaceShifterConfig(SwapperConfig):
    """``train.aei_net``: FaceShifter's AEI-Net. Data: 20 % of pairs share the identity
    (thesis §5.1, "same ratio 1:5"), here as the same image so eq. 4.11 applies."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(pairing="mixed", same_ratio=0.2),
        description="How training pairs are drawn.",
    )
    weights: FaceShifterWeightsConfig = Field(default_factory=FaceShifterWeightsConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(weight_decay=1e-4),
        description="Adam lr 4e-4, β (0, 0.999), weight decay 1e-4 for G and D "
        "(taotaonice/FaceShifter train.py; the thesis gives no optimizer settings).",
    )
    debug: AEINetArchConfig = Field(default_factory=lambda: DEBUG_AEI.model_copy())
    paper: AEINetArchConfig = Field(default_factory=AEINetArchConfig)

    def check_recipe(self) -> None:
        d = self.data
        refuse(
            self.weights.rec > 0 and (not d.has_intra or d.intra == "same_identity"),
            "the reconstruction loss (weights.rec > 0) fires only on pairs with "
            f"X_s = X_t, which data (pairing={d.pairing}, same_ratio={d.same_ratio}, "
            f"intra={d.intra}) never draws; use intra=same_image with same_ratio > 0, or set "
            "weights.rec=0",
        )


class FaceShifterObjective(Objective):
    """FaceShifter AEI-Net, eq. 4.8–4.12 (thesis §4.2.5)."""

    G_STATS: ClassVar[tuple[str, ...]] = (
        "Loss/G/total",
        "Loss/G/adv",
        "Loss/G/id",
        "Loss/G/att",
        "Loss/G/rec",
    )

    def aei_terms(self, g_engine, d_module: nn.Module, b: PairBatch):
        """Swap X_t with z_id(X_s); returns (swap, per-scale D logits of the swap, L_id,
        L_att) — the terms FaceShifter and GHOST share (eq. 4.8–4.10)."""
        dtype = param_dtype(g_engine.module)
        swap, att_t = g_engine(b.target.to(dtype), b.z_id.to(dtype))
        att_swap = g_engine.module.attributes(swap)
        fake = [o.float() for o in logits(d_module(swap.to(param_dtype(d_module))))]
        idl = identity_loss(self.id_encoder(swap.float()), b.z_id.float())
        # eq. 4.10 has no stop-gradient: L_att trains the attribute encoder through both
        # passes, z_att(Ŷ) and z_att(X_t)
        att = attribute_loss([a.float() for a in att_swap], [a.float() for a in att_t])
        return swap, fake, idl, att

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        swap, fake, idl, att = self.aei_terms(g_engine, d_module, b)
        adv = hinge_g_loss(fake)
        rec = reconstruction_loss(swap.float(), b.target.float(), b.same_image)
        total = self.w.adv * adv + self.w.id * idl + self.w.att * att + self.w.rec * rec
        terms = (total, adv, idl, att, rec)
        return PhaseResult(total, dict(zip(self.G_STATS, terms, strict=True))), swap.detach()
