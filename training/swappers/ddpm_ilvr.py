"""Facke's DDPM-ILVR (seed 002 §2.3, §3): fine-tune a pretrained DDPM on the prepared crops with
Ho et al.'s L_simple, one DeepSpeed engine, no discriminator; swap by ILVR sampling
(:mod:`training.networks.ddpm_ilvr`).

Gmain: x_0 = the batch's target crops at the U-Net's size, t ~ U{0, …, T−1}, ε ~ N(0, I),
x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, L = mean ‖ε − ε_θ(x_t, t)‖² (Ho et al. 2020 eq. 14;
:func:`training.priors.ddpm.epsilon_loss`'s formula, run through the engine). t and ε come
from the rank's torch RNG, which checkpoints save, so a resumed run draws the same.
Facke §3 fine-tunes on VGGFace2-HQ; the identities play no part in the loss (pairs are
drawn, and only their targets are used). The step's returned swap is the one-step estimate
x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t; sample grids and evaluation run ILVR swaps.

Adam lr 2e-5, β (0.9, 0.999): Ho et al.'s setting for their 256-px models (Appendix B);
Facke gives none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from infra.config import StrictConfig
from infra.geometry import resize_square as resize
from training.networks.ddpm_ilvr import DDPMILVRConfig
from training.swappers.base import (
    DataRecipeConfig,
    Objective,
    OptimizerConfig,
    PhaseResult,
    SwapperConfig,
    param_dtype,
)

if TYPE_CHECKING:
    from training.data import PairBatch

#: The ``debug`` width: 64-px crops, the 16-px test U-Net (T = 100), 25 ILVR steps, N = 4.
DEBUG_DDPM_ILVR = {"image_size": 64, "ilvr": {"n": 4, "steps": 25}}


def paper_ddpm_ilvr() -> DDPMILVRConfig:
    """The ``paper`` width: 256-px crops on Ho et al.'s 256-px U-Net (the registered
    CelebA-HQ model), N = 4 and 100 sampling steps (ILVR's choices for FFHQ 256, Choi et al.
    §4; Facke does not give its N or step count)."""
    from training.priors.ddpm import PAPER_256

    return DDPMILVRConfig(image_size=256, unet=PAPER_256, ilvr={"n": 4, "steps": 100})


class DDPMWeightsConfig(StrictConfig):
    """The one loss of the fine-tuning."""

    eps: float = Field(1.0, gt=0, description="Weight of L_simple (eq. 14).")


class DDPMILVRSwapperConfig(SwapperConfig):
    """``train.ddpm_ilvr``: targets uniform over the training images (no pairing is used)."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(draw="images", pairing="mixed", same_ratio=0.0),
        description="How training images are drawn (only the targets are used).",
    )
    weights: DDPMWeightsConfig = Field(default_factory=DDPMWeightsConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(lr=2e-5, betas=(0.9, 0.999)),
        description="Adam lr 2e-5 (Ho et al. 2020, 256 px; the discriminator's is unused).",
    )
    debug: DDPMILVRConfig = Field(default_factory=lambda: DDPMILVRConfig(**DEBUG_DDPM_ILVR))
    paper: DDPMILVRConfig = Field(default_factory=paper_ddpm_ilvr)


class DDPMILVRObjective(Objective):
    """Gmain of the fine-tuning: L_simple (module docstring). ``Loss/G/eps`` is the plain
    loss, ``Loss/G/total`` the weighted one."""

    G_STATS: ClassVar[tuple[str, ...]] = ("Loss/G/total", "Loss/G/eps")

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        net = g_engine.module
        dtype, sched = param_dtype(net), net.scheduler
        x0 = resize(b.target.float(), net.cfg.unet.sample_size)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],))
        noise = torch.randn_like(x0)
        x_t = sched.add_noise(x0, noise, t)
        eps, _ = g_engine(x_t.to(dtype), b.z_id.to(dtype), None, t.to(x0.device))
        loss = F.mse_loss(eps.float(), noise)
        with torch.no_grad():
            abar = sched.alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
            x0_hat = ((x_t - (1 - abar).sqrt() * eps.float()) / abar.sqrt()).clamp(-1, 1)
        total = self.w.eps * loss
        stats = {"Loss/G/total": total, "Loss/G/eps": loss}
        return PhaseResult(total, stats), resize(x0_hat, b.target.shape[-1])
