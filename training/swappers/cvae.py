"""Facke's CVAE with identity loss (seed 002 §2.2.1–2.2.4), trained without a
discriminator: L = λ_Id L_Id + Σ_i w_i MSE(Ŷ_i, X_t,i) + λ_KL D_KL(q(z | X_t) ‖ N(0, I)).

* reconstruction: the MSE between the generated and the target image (§2.2.1: "we simply
  use the MSE loss between the original image and the generated image");
* KL of the 2-D latent's posterior to N(0, I) "with a quite small weight" (§2.2.1, eq. 9);
* identity loss (§2.2.4), 1 − cos of the identity encoder's embeddings (SimSwap eq. 3);
* schedule (§2.2.4): "for odd iterations, we train the net with the same target image and
  source image with a higher weight of reconstruction loss. And for even iterations, ...
  different target image and source image with a lower weight": ``data.pairing:
  alternate`` (step 1, 3, … intra-ID, source = target image; steps 2, 4, … inter-ID), the
  pair's weight ``weights.rec_intra`` or ``weights.rec_inter``.

Facke gives no weight values: λ_Id = 30 is SimSwap's (eq. 2), the two reconstruction
weights 10 and 1 and λ_KL = 0.01 are the project's choices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from infra.config import StrictConfig
from training.losses import identity_loss, kl_to_standard_normal, weighted_mse
from training.networks.cvae import CVAEGeneratorConfig
from training.swappers.base import (
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

#: The debug width of both CVAE swappers (SimSwap's debug widths).
DEBUG_CVAE = {
    "image_size": 64,
    "base_channels": 16,
    "max_channels": 64,
    "num_down": 3,
    "id_blocks": 2,
}


class CVAEWeightsConfig(StrictConfig):
    """Loss weights of the CVAE with identity loss (Facke §2.2.1, §2.2.4)."""

    id: float = Field(30.0, ge=0, description="λ_Id, identity loss (SimSwap's value).")
    rec_intra: float = Field(
        10.0, ge=0, description="MSE weight on intra-ID pairs (§2.2.4: the higher one)."
    )
    rec_inter: float = Field(
        1.0, ge=0, description="MSE weight on inter-ID pairs (§2.2.4: the lower one)."
    )
    kl: float = Field(0.01, ge=0, description="λ_KL, KL to N(0, I) (§2.2.1: quite small).")


class CVAEConfig(SwapperConfig):
    """``train.cvae``: intra-ID (source = target image) and inter-ID batches alternate,
    targets uniform over images (Facke §2.2.4); Adam as SimSwap's release (Facke trains its
    models in SimSwap's framework)."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(
            draw="images", pairing="alternate", intra="same_image"
        ),
        description="How training pairs are drawn.",
    )
    weights: CVAEWeightsConfig = Field(default_factory=CVAEWeightsConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(betas=(0.0, 0.99)),
        description="Adam lr 4e-4, β (0, 0.99) (SimSwap release; the discriminator's is unused).",
    )
    debug: CVAEGeneratorConfig = Field(default_factory=lambda: CVAEGeneratorConfig(**DEBUG_CVAE))
    paper: CVAEGeneratorConfig = Field(default_factory=CVAEGeneratorConfig)

    def check_recipe(self) -> None:
        refuse(
            self.weights.rec_intra > 0 and not self.data.has_intra,
            "the intra-ID reconstruction weight (weights.rec_intra > 0) needs intra-ID pairs; "
            "data.pairing=mixed with same_ratio=0 never draws one (use pairing=alternate, "
            "raise same_ratio, or set weights.rec_intra=0)",
        )


class CVAEObjective(Objective):
    """Gmain of the CVAE (no discriminator): identity, per-pair weighted MSE reconstruction
    and KL (module docstring). ``Loss/G/rec`` reports the plain MSE of the batch; the total
    weighs each pair by ``rec_intra`` or ``rec_inter``."""

    G_STATS: ClassVar[tuple[str, ...]] = ("Loss/G/total", "Loss/G/id", "Loss/G/rec", "Loss/G/kl")

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = param_dtype(g_engine.module)
        swap, (mu, logvar) = g_engine(b.target.to(dtype), b.z_id.to(dtype))
        swap, target = swap.float(), b.target.float()
        idl = identity_loss(self.id_encoder(swap), b.z_id.float())
        w = self.w
        pair_w = torch.where(b.same_identity, w.rec_intra, w.rec_inter).to(swap.device)
        rec = weighted_mse(swap, target, pair_w)
        kl = kl_to_standard_normal(mu.float(), logvar.float())
        total = w.id * idl + rec + w.kl * kl
        mse = (swap - target).pow(2).mean()
        stats = dict(zip(self.G_STATS, (total, idl, mse, kl), strict=True))
        return PhaseResult(total, stats), swap.detach()
