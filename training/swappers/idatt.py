"""IDATT / MAttFace (seed 004 §3) on a frozen StyleGAN2 (:mod:`training.networks.idatt`),
trained against the project's multi-scale discriminator.

L_all = λ_adv L_adv + λ_rec L_rec + λ_p L_p + λ_id L_id + λ_3d L_3d (eq. 12):

* L_adv — eq. 13, the GAN log-likelihood; D minimises softplus(−D(x)) + softplus(D(x̃)), G
  the non-saturating softplus(−D(x̃));
* L_rec — eq. 14, ‖I_Sw − I_t‖₂ as the mean squared error, on pairs whose source and target
  are the same face ("when the source and target faces are from the same identity");
* L_p — eq. 15, LPIPS (VGG) between the swap and the target;
* L_id — eq. 16, 1 − cos of the identity encoder's embeddings of swap and source (the seed's
  R is ArcFace; here the dataset's training encoder);
* L_3d — eq. 17, 1 − cos of the Deep3DFaceRecon identity coefficients α ∈ R^80 of swap and
  source, when the registered weights (``deep3dfacerecon_resnet50``, the R-Net evaluation's
  paper metrics also load: :class:`infra.paper_models.ReconNet`) are in the models directory;
  otherwise the term is skipped and a notice is logged once at start. The R-Net reads the
  crop resized to 224 px (not its own five-point alignment; as evaluation does).

"The proportion of source and target faces being the same for all training face pairs is
0.5" (§4.1): ``data.same_ratio`` 0.5 with same-image pairs. Adam β (0.9, 0.999), lr 1e-4
(§4.1) for G and D. The λ are not given in the seed: all 1 is the project's choice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from infra.config import StrictConfig
from training.losses import identity_loss, logistic_d_loss, logistic_g_loss, pair_mse
from training.networks.discriminator import DiscriminatorConfig, logits
from training.networks.idatt import IDATTConfig
from training.networks.style_prior import debug_priors
from training.perceptual import load_lpips_vgg
from training.swappers.base import (
    ArchConfig,
    BuildContext,
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

log = logging.getLogger(__name__)

#: Registry name of the Deep3DFaceRecon R-Net (eq. 17's D).
DEEP3D = "deep3dfacerecon_resnet50"


class IDATTArchConfig(ArchConfig, IDATTConfig):
    """One width of IDATT and its discriminator (the project's multi-scale PatchGAN; the seed
    does not describe its D)."""

    discriminator: DiscriminatorConfig = Field(
        default_factory=DiscriminatorConfig, description="Multi-scale PatchGAN."
    )


#: The ``debug`` width: 64-px crops on the test-size priors (stand-ins).
DEBUG_IDATT = {
    **debug_priors(),
    "post_channels": 8,
    "discriminator": {"base_channels": 16, "max_channels": 64, "num_scales": 2},
}


class IDATTWeightsConfig(StrictConfig):
    """λ of MAttFace eq. 12 (the seed gives none: 1 each is the project's choice)."""

    adv: float = Field(1.0, ge=0, description="λ_adv, eq. 13.")
    rec: float = Field(1.0, ge=0, description="λ_rec, eq. 14 (same-face pairs).")
    lpips: float = Field(1.0, ge=0, description="λ_p, LPIPS, eq. 15.")
    id: float = Field(1.0, ge=0, description="λ_id, eq. 16.")
    three_d: float = Field(
        1.0, ge=0, description="λ_3d, eq. 17 (Deep3DFaceRecon; skipped without its weights)."
    )


class IDATTSwapperConfig(SwapperConfig):
    """``train.idatt``: half the pairs same-face (§4.1), Adam (0.9, 0.999) at 1e-4."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(
            draw="images", pairing="mixed", same_ratio=0.5, intra="same_image"
        ),
        description="How training pairs are drawn.",
    )
    weights: IDATTWeightsConfig = Field(default_factory=IDATTWeightsConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(lr=1e-4, betas=(0.9, 0.999)),
        description="Adam lr 1e-4, β (0.9, 0.999) (seed 004 §4.1).",
    )
    debug: IDATTArchConfig = Field(default_factory=lambda: IDATTArchConfig(**DEBUG_IDATT))
    paper: IDATTArchConfig = Field(default_factory=IDATTArchConfig)

    def check_recipe(self) -> None:
        refuse(
            self.weights.rec > 0 and not self.data.has_intra,
            "the reconstruction loss (weights.rec > 0) needs same-face pairs; raise "
            "data.same_ratio or set weights.rec=0",
        )


class IDATTObjective(Objective):
    """Gmain and Dmain of IDATT (eq. 12–17, module docstring)."""

    G_STATS: ClassVar[tuple[str, ...]] = (
        "Loss/G/total",
        "Loss/G/adv",
        "Loss/G/rec",
        "Loss/G/lpips",
        "Loss/G/id",
        "Loss/G/3d",
    )

    def __init__(self, id_encoder, weights, lpips: nn.Module, recon: nn.Module | None):
        super().__init__(id_encoder, weights)
        self.lpips, self.recon = lpips, recon

    @classmethod
    def build(cls, section: IDATTSwapperConfig, ctx: BuildContext) -> IDATTObjective:
        from infra.paper_models import load_recon

        recon = None
        if section.weights.three_d > 0:
            if ctx.store.available(DEEP3D):
                recon = load_recon(ctx.store.path(DEEP3D)).requires_grad_(False).eval()
            else:
                log.warning(
                    "3D-aware loss (eq. 17) skipped: %s is not in the models directory (%s)",
                    DEEP3D,
                    ctx.store.spec(DEEP3D).url,
                )
        return cls(ctx.id_encoder, section.weights, load_lpips_vgg(ctx.store), recon)

    def identity_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """α ∈ R^80 of Deep3DFaceRecon (seed 004 eq. 17): faces (B, 3, S, S) in [-1, 1] →
        (B, 80), the R-Net reading RGB in [0, 1] at 224 px."""
        from infra.paper_models import RECON_COEFFS

        side = self.recon.input_size
        x = F.interpolate((x + 1) / 2, size=(side, side), mode="bilinear", align_corners=False)
        return self.recon(x)[:, RECON_COEFFS["id"]]

    def three_d_loss(self, swap: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Eq. 17: 1 − cos(α(swap), α(source)), batch mean; 0 without the R-Net."""
        if self.recon is None:
            return swap.new_zeros(())
        with torch.no_grad():
            b = self.identity_coefficients(source)
        a = self.identity_coefficients(swap)
        return (1 - F.cosine_similarity(a, b, dim=1)).mean()

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = param_dtype(g_engine.module)
        swap, _ = g_engine(b.target.to(dtype), b.z_id.to(dtype), b.source.to(dtype))
        swap, target, w = swap.float(), b.target.float(), self.w
        adv = logistic_g_loss([o.float() for o in logits(d_module(swap.to(param_dtype(d_module))))])
        rec = pair_mse(swap, target, b.same_image)
        lp = self.lpips(swap, target).mean()
        idl = identity_loss(self.id_encoder(swap), b.z_id.float())
        three_d = self.three_d_loss(swap, b.source.float())
        total = w.adv * adv + w.rec * rec + w.lpips * lp + w.id * idl + w.three_d * three_d
        stats = dict(zip(self.G_STATS, (total, adv, rec, lp, idl, three_d), strict=True))
        return PhaseResult(total, stats), swap.detach()

    def discriminator_loss(self, d_engine, b: PairBatch, swap: torch.Tensor) -> PhaseResult:
        dtype = param_dtype(d_engine.module)
        on_real = [s.float() for s in logits(d_engine(b.target.to(dtype)))]
        on_fake = [s.float() for s in logits(d_engine(swap.to(dtype)))]
        loss = logistic_d_loss(on_real, on_fake)
        return PhaseResult(
            loss,
            {
                "Loss/D/total": loss,
                "Scores/D/real": torch.stack([s.mean() for s in on_real]).mean(),
                "Scores/D/fake": torch.stack([s.mean() for s in on_fake]).mean(),
            },
        )
