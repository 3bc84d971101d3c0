"""Facke's DDPM-ILVR swapper (seed 002 §2.3, §3) as a generator module: a diffusers U-Net
fine-tuned with L_simple, swapping by ILVR sampling (:mod:`training.priors.ddpm`).

The module has two uses, selected by ``timesteps``:

* training (``timesteps`` given): the ε-prediction ε_θ(x_t, t) of noisy crops — the
  objective computes Ho et al.'s L_simple through the DeepSpeed engine;
* swapping (``timesteps`` None): Facke's "Algorithm 1 ILVR for Face Swapping" with the source
  image seeding the chain (x_T ~ q(x_T | I_S)) and the target as the reference whose
  low frequencies φ_N are imposed at every step (:func:`training.priors.ddpm.ilvr_sample`).

Crops are resized to the U-Net's ``sample_size`` and the result back to the crop size. The
sampling noise comes from a generator seeded with ``ilvr.seed`` on every call, so a swap is
reproducible. The U-Net's initial weights are the registered DDPM (``load_priors``); every
parameter is fine-tuned (Facke §3 fine-tunes the whole model).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig
from infra.geometry import resize_square as resize
from training.priors.ddpm import (
    DDPM_CELEBAHQ_256,
    DDPMConfig,
    LowPassKind,
    build_scheduler,
    build_unet,
    ilvr_sample,
    load_pretrained_unet,
)
from training.priors.layout import layout_problems


class ILVRConfig(StrictConfig):
    """ILVR sampling settings (Facke §2.3.2; Choi et al. 2021)."""

    n: int = Field(4, ge=1, description="Low-pass scale N of φ_N (down- and up-sampling).")
    steps: int = Field(100, ge=1, description="Sampling steps (≤ the schedule's T).")
    start_t: int | None = Field(
        None, ge=0, description="Start the chain at this timestep (None: the full chain, T−1)."
    )
    shared_noise: bool = Field(
        True, description="One forward noise for x_T and every y_t (Facke's reading)."
    )
    low_pass: LowPassKind = Field("bicubic", description="φ_N kind: bicubic or box.")
    seed: int = Field(0, description="Seed of the sampling noise (same swap on every call).")


class DDPMILVRConfig(StrictConfig):
    """Architecture of :class:`DDPMILVRNet`: crop size, the U-Net and schedule (must match
    the registered DDPM's) and ILVR's settings. ValueError when the U-Net's ``sample_size``
    is not divisible by N."""

    image_size: int = Field(256, ge=8, description="Crop side in and out, px.")
    unet: DDPMConfig = Field(default_factory=DDPMConfig)
    ilvr: ILVRConfig = Field(default_factory=ILVRConfig)

    @model_validator(mode="after")
    def _divisible(self) -> DDPMILVRConfig:
        if self.unet.sample_size % self.ilvr.n:
            raise ValueError(
                f"U-Net sample_size {self.unet.sample_size} is not divisible by ilvr.n "
                f"{self.ilvr.n}"
            )
        return self


class DDPMILVRNet(nn.Module):
    """``forward(target, z_id, source, timesteps=None)``.

    Swap (``timesteps`` None): target, source (B, 3, S, S) float in [-1, 1], S =
    ``cfg.image_size``; z_id (B, D) ignored → (swap (B, 3, S, S) in [-1, 1], {}), no gradient.
    ε-prediction (``timesteps`` (B,) int64 in [0, T)): ``target`` holds the noisy images
    x_t (B, 3, s, s) at the U-Net's ``sample_size`` s → (ε_θ(x_t, t) (B, 3, s, s), {}).
    ValueError on other shapes.
    """

    extra_inputs = ("source",)
    calibrate_batch_norm = False  # group norm only

    def __init__(self, cfg: DDPMILVRConfig, id_dim: int):
        super().__init__()
        if id_dim < 1:
            raise ValueError(f"id_dim must be >= 1, got {id_dim}")
        self.cfg, self.id_dim = cfg, id_dim
        self.unet = build_unet(cfg.unet)
        self.scheduler = build_scheduler(cfg.unet)

    @torch.no_grad()
    def load_priors(self, store) -> None:
        """Copy the registered DDPM (``ddpm_ema_celebahq_256``: the diffusers folder holding
        its file) into the U-Net. Raises :class:`infra.models.ModelFileMissingError` naming the
        file and URL, FileNotFoundError for an incomplete folder, ValueError when its
        architecture differs from ``cfg.unet``."""
        unet, _ = load_pretrained_unet(store.path(DDPM_CELEBAHQ_256).parent)
        theirs = unet.state_dict()
        ours = {k: tuple(v.shape) for k, v in self.unet.state_dict().items()}
        missing, unexpected, wrong = layout_problems(theirs, ours)
        if missing or unexpected or wrong:
            raise ValueError(
                f"the registered DDPM ({unet.config.sample_size} px, block_out_channels "
                f"{tuple(unet.config.block_out_channels)}) is not the U-Net of this "
                f"architecture ({self.cfg.unet.sample_size} px, "
                f"{self.cfg.unet.block_out_channels}); e.g. {(missing + unexpected + wrong)[:3]}"
            )
        self.unet.load_state_dict(theirs)

    def epsilon(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t): x_t (B, 3, s, s) float, timesteps (B,) int64 → (B, 3, s, s)."""
        return self.unet(x_t, timesteps).sample

    def forward(self, target, z_id, source=None, timesteps=None):
        if timesteps is not None:
            return self.epsilon(target, timesteps), {}
        s = self.cfg.image_size
        for name, x in (("target", target), ("source", source)):
            if x is None or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
                got = None if x is None else tuple(x.shape)
                raise ValueError(f"{name}: expected (B, 3, {s}, {s}), got {got}")
        return self.swap(target, source), {}

    @torch.no_grad()
    def swap(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """ILVR swap at the U-Net's size, resized back: (B, 3, S, S) in [-1, 1]."""
        c, side = self.cfg.ilvr, self.cfg.unet.sample_size
        gen = torch.Generator(device=target.device).manual_seed(c.seed)
        out = ilvr_sample(
            self.unet,
            self.scheduler,
            resize(source, side).to(self.unet.dtype),
            resize(target, side).to(self.unet.dtype),
            c.n,
            c.steps,
            generator=gen,
            start_t=c.start_t,
            shared_noise=c.shared_noise,
            low_pass_kind=c.low_pass,
        )
        return resize(out, self.cfg.image_size).clamp(-1.0, 1.0)
