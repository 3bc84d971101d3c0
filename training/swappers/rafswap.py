"""RAFSwap (seed 000 §II.B, §III.C; Xu et al. 2022, release xc-csc101/RAFSwap) on a frozen
StyleGAN2 (:mod:`training.networks.rafswap`). No discriminator (the release's coach trains the
encoder and the mask predictor without one).

L = λ_id L_id + λ_l2 L_l2 + λ_lpips L_lpips + λ_w L_wnorm + λ_b L_binary + λ_e L_entropy
    + λ_p L_prior

* L_id — 1 − cos between the identity encoder's embeddings of the swap and the source (seed
  000 §II.B: "an identity loss comparing embeddings from a pre-trained model (ArcFace)");
* L_l2 — MSE to the target on same-image pairs only (the release's ``calc_loss`` masks the
  L2 by ``same``; seed 000 §III.C enables it "every fifth epoch"): ``data.same_ratio`` 0.2
  makes one pair in five a same-image pair, the project's per-pair reading of "every fifth";
* L_lpips — LPIPS between swap and target (§II.B: "calculated using a pre-trained VGG16";
  the release's coach uses AlexNet LPIPS; VGG here, as the seed);
* L_wnorm — pSp's W-norm of the codes' offsets from the average latent (the release's
  ``w_norm_lambda``; seed 000 §III.C added it when the style vectors collapsed to ≈ 0);
* L_binary, L_entropy, L_prior — seed 000 §III.C's mask losses against the mask collapsing
  to 0: mean near 0.5, per-pixel entropy, and the distance to the dataset's average face
  region (the mean FaceMesh face-oval mask of up to ``prior_faces`` training faces).

Weights: λ_l2 = 1 and λ_lpips = 0.8 are pSp's training defaults (the release is built on
pSp's ``train_options.py``); λ_id, λ_w and the mask weights are the project's (neither source
gives them). Adam lr 1e-4 (pSp's default rate; pSp and the release default to Ranger).

Statistics besides the losses: ``Styles/mean`` and ``Styles/std`` of the W+ codes StyleGAN2
receives, ``Styles/prior_std`` of the average latent's rows for comparison, ``Mask/mean``
(seed 000 Fig. 9's collapse shows as std → 0 and mask mean → 0).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field
from torch import nn

from infra.config import StrictConfig
from training.losses import (
    identity_loss,
    mask_binary_loss,
    mask_entropy_loss,
    mask_prior_loss,
    pair_mse,
    w_norm_loss,
)
from training.networks.rafswap import RAFSwapConfig as RAFSwapNetConfig
from training.networks.style_prior import debug_priors
from training.perceptual import load_lpips_vgg
from training.swappers.base import (
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

#: The ``debug`` width: 64-px crops on the test-size priors (stand-ins).
DEBUG_RAFSWAP = {
    **debug_priors(),
    "heads": 4,
    "mask_channels": 8,
    "mask_hidden": 16,
}


class RAFSwapWeightsConfig(StrictConfig):
    """Loss weights of RAFSwap (module docstring)."""

    id: float = Field(1.0, ge=0, description="λ_id, identity loss.")
    l2: float = Field(1.0, ge=0, description="λ_l2, MSE on same-image pairs (pSp default).")
    lpips: float = Field(0.8, ge=0, description="λ_lpips, LPIPS to the target (pSp default).")
    w_norm: float = Field(0.005, ge=0, description="λ_w, W-norm of the code offsets.")
    mask_binary: float = Field(0.1, ge=0, description="Mask mean near 0.5.")
    mask_entropy: float = Field(0.01, ge=0, description="Per-pixel mask entropy.")
    mask_prior: float = Field(0.1, ge=0, description="Distance to the average face region.")


class RAFSwapConfig(SwapperConfig):
    """``train.rafswap``: images drawn uniformly, one pair in five a same-image pair."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(
            draw="images", pairing="mixed", same_ratio=0.2, intra="same_image"
        ),
        description="How training pairs are drawn.",
    )
    weights: RAFSwapWeightsConfig = Field(default_factory=RAFSwapWeightsConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(lr=1e-4, betas=(0.9, 0.999)),
        description="Adam lr 1e-4 (pSp's rate; the discriminator's is unused).",
    )
    prior_faces: int = Field(
        64, ge=1, description="Training faces averaged into the face-region prior of the mask."
    )
    debug: RAFSwapNetConfig = Field(default_factory=lambda: RAFSwapNetConfig(**DEBUG_RAFSWAP))
    paper: RAFSwapNetConfig = Field(default_factory=RAFSwapNetConfig)

    def check_recipe(self) -> None:
        refuse(
            self.weights.l2 > 0 and not self.data.has_intra,
            "the L2 reconstruction (weights.l2 > 0) needs same-image pairs; raise "
            "data.same_ratio or set weights.l2=0",
        )

    @property
    def annotations(self) -> tuple[str, ...]:
        return ("regions", "source_regions")


def average_face_region(ctx: BuildContext, n: int) -> torch.Tensor:
    """(1, 1, S, S) float32: the mean FaceMesh face-oval mask of the first ``n`` training
    faces at the generator size (the "average facial region of the dataset", seed 000
    §III.C). ValueError when the prepared samples have no ``lmk468.npy``."""
    from training.train import first_pairs

    pairs = first_pairs(ctx.card, ctx.data_dir, ctx.image_size, n, ("face_mask",))
    return pairs.annotations["face_mask"].mean(0, keepdim=True)


class RAFSwapObjective(Objective):
    """Gmain of RAFSwap (no discriminator): the module docstring's terms."""

    LOSSES: ClassVar[tuple[str, ...]] = (
        "Loss/G/total",
        "Loss/G/id",
        "Loss/G/l2",
        "Loss/G/lpips",
        "Loss/G/w_norm",
        "Loss/G/mask",
    )
    G_STATS: ClassVar[tuple[str, ...]] = (
        *LOSSES,
        "Styles/mean",
        "Styles/std",
        "Styles/prior_std",
        "Mask/mean",
    )

    def __init__(self, id_encoder: nn.Module, weights, lpips: nn.Module, prior: torch.Tensor):
        super().__init__(id_encoder, weights)
        self.lpips, self.prior = lpips, prior

    @classmethod
    def build(cls, section: RAFSwapConfig, ctx: BuildContext) -> RAFSwapObjective:
        prior = average_face_region(ctx, section.prior_faces)
        log.info("mask prior: mean face region %.3f of the crop", float(prior.mean()))
        return cls(ctx.id_encoder, section.weights, load_lpips_vgg(ctx.store), prior)

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = param_dtype(g_engine.module)
        args = (b.source, b.annotations["regions"], b.annotations["source_regions"])
        swap, x = g_engine(b.target.to(dtype), b.z_id.to(dtype), *(a.to(dtype) for a in args))
        swap, target, w = swap.float(), b.target.float(), self.w
        idl = identity_loss(self.id_encoder(swap), b.z_id.float())
        l2 = pair_mse(swap, target, b.same_image)
        lp = self.lpips(swap, target).mean()
        wn = w_norm_loss(x["codes"])
        mask = x["mask"].float()
        m_bin, m_ent = mask_binary_loss(mask), mask_entropy_loss(mask)
        m_pri = mask_prior_loss(mask, self.prior.to(mask.device))
        masks = w.mask_binary * m_bin + w.mask_entropy * m_ent + w.mask_prior * m_pri
        total = w.id * idl + w.l2 * l2 + w.lpips * lp + w.w_norm * wn + masks
        styles = x["styles"].detach().float()
        stats = dict(zip(self.LOSSES, (total, idl, l2, lp, wn, masks), strict=True))
        stats |= {
            "Styles/mean": styles.mean(),
            "Styles/std": styles.std(),
            "Styles/prior_std": g_engine.module.w_avg.detach().float().std(),
            "Mask/mean": mask.detach().mean(),
        }
        return PhaseResult(total, stats), swap.detach()
