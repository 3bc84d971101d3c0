"""What RAFSwap and IDATT (MAttFace) share: a pSp encoder over source and target and a frozen
StyleGAN2 rendering W+ codes.

Both swappers (seed 000 §II.B after Xu et al. 2022; seed 004 §3.1) encode source and target
with one weight-shared pSp encoder (:class:`training.priors.psp.PSPEncoder`: the IR-SE-50
backbone gives the three maps c1 (H/4), c2 (H/8), c3 (H/16)), fuse source identity into the
target's maps, map the fused maps to W+ codes with pSp's style heads and render them with the
frozen StyleGAN2 FFHQ generator (:class:`training.priors.stylegan2.StyleGAN2Generator`). The
codes are offsets from the average latent (pSp's ``start_from_latent_avg``, which RAFSwap's
release keeps: ``codes + latent_avg``), held here as the persistent buffer ``w_avg`` so an
exported generator carries it.

Frozen (never trained, kept in eval mode so the backbone's batch norm uses its running
statistics): the backbone (``encoder.input_layer``, ``encoder.body``; MAttFace's Φ_E^feat,
RAFSwap's "pre-trained encoder … remain fixed", seed 000 §II.B) and the StyleGAN2 generator.
Trained: pSp's lateral layers and style heads (Φ_E^lat) and each swapper's own modules.

:meth:`StylePriorNet.load_priors` copies the registered weights in (``stylegan2_ffhq_1024`` and
``psp_ffhq_encode``); the ``debug`` widths use test-size priors (:data:`DEBUG_STYLEGAN2`,
:data:`DEBUG_PSP`), which only randomly initialised stand-ins provide
(:mod:`infra.stand_ins`).
"""

from __future__ import annotations

import logging

import torch
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig
from infra.geometry import resize_square as resize
from training.priors.psp import PSPEncoder, PSPEncoderConfig, load_psp_ffhq_encoder
from training.priors.stylegan2 import StyleGAN2Config, StyleGAN2Generator, load_stylegan2_ffhq

log = logging.getLogger(__name__)

#: Test-size StyleGAN2 of the ``debug`` widths (64 px, 10 W+ rows of 32; ~0.1 M parameters).
DEBUG_STYLEGAN2 = StyleGAN2Config(size=64, style_dim=32, n_mlp=2, width=32)
#: Test-size pSp encoder matching :data:`DEBUG_STYLEGAN2` (channels 4, 8, 16, 32).
DEBUG_PSP = PSPEncoderConfig(n_styles=10, style_dim=32, width=16)


class StylePriorConfig(StrictConfig):
    """The prior part of a StyleGAN2-based swapper's architecture.

    ``image_size``: side of the crops the swapper takes and returns, px; ``encoder_size``:
    side the pSp encoder reads (256 for the published encoder; inputs are resized);
    ``stylegan2`` / ``encoder``: the priors' architectures (published defaults: FFHQ 1024 px,
    18 × 512 W+; pSp IR-SE-50). ValueError when the encoder's W+ rows or width differ from the
    generator's.
    """

    image_size: int = Field(256, ge=16, description="Crop side in and out, px.")
    encoder_size: int = Field(256, ge=16, le=256, description="pSp input side, px.")
    stylegan2: StyleGAN2Config = Field(default_factory=StyleGAN2Config)
    encoder: PSPEncoderConfig = Field(default_factory=PSPEncoderConfig)

    @model_validator(mode="after")
    def _matching_priors(self) -> StylePriorConfig:
        g, e = self.stylegan2, self.encoder
        if (e.n_styles, e.style_dim) != (g.n_latent, g.style_dim):
            raise ValueError(
                f"the pSp encoder gives {e.n_styles} x {e.style_dim} codes but the StyleGAN2 "
                f"generator of size {g.size} takes {g.n_latent} x {g.style_dim} (W+)"
            )
        return self


def debug_priors(image_size: int = 64) -> dict:
    """The prior part of a ``debug`` architecture: crops and pSp input at ``image_size`` on
    the test-size priors :data:`DEBUG_STYLEGAN2` and :data:`DEBUG_PSP`."""
    return {
        "image_size": image_size,
        "encoder_size": image_size,
        "stylegan2": DEBUG_STYLEGAN2.model_dump(),
        "encoder": DEBUG_PSP.model_dump(),
    }


class StylePriorNet(nn.Module):
    """Base of RAFSwap and IDATT: ``encoder`` (pSp), ``decoder`` (StyleGAN2, frozen) and
    ``w_avg`` (n_latent, style_dim) float32, the average latent added to the codes.

    Subclasses implement ``forward(target, z_id, source, …)``; ``z_id`` (the dataset's
    embedding) is accepted for the common generator interface and not used: identity comes
    from the source image. ``extra_inputs`` names the inputs after ``(target, z_id)``.
    """

    extra_inputs: tuple[str, ...] = ("source",)
    #: The frozen backbone's batch norm keeps its published statistics: EMA export must not
    #: re-estimate them (:func:`training.ema.recompute_batch_norm`).
    calibrate_batch_norm = False

    def __init__(self, cfg: StylePriorConfig, id_dim: int):
        super().__init__()
        if id_dim < 1:
            raise ValueError(f"id_dim must be >= 1, got {id_dim}")
        self.cfg, self.id_dim = cfg, id_dim
        self.encoder = PSPEncoder(cfg.encoder)
        self.decoder = StyleGAN2Generator(cfg.stylegan2)
        g = cfg.stylegan2
        self.register_buffer("w_avg", torch.zeros(g.n_latent, g.style_dim))
        for frozen in self.frozen_modules():
            frozen.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The pretrained parts that are never trained: backbone and StyleGAN2."""
        return [self.encoder.input_layer, self.encoder.body, self.decoder]

    def train(self, mode: bool = True) -> StylePriorNet:
        super().train(mode)
        for frozen in self.frozen_modules():
            frozen.eval()
        return self

    @torch.no_grad()
    def load_priors(self, store) -> None:
        """Copy the registered StyleGAN2 (``stylegan2_ffhq_1024``) and pSp encoder
        (``psp_ffhq_encode``) weights in, at this architecture's configs, and set ``w_avg``
        from the pSp checkpoint's ``latent_avg`` (the StyleGAN2 file's when pSp has none).
        Raises :class:`infra.models.ModelFileMissingError` naming a missing file and its
        download URL, ValueError when a file is not in the layout of the config."""
        cfg = self.cfg
        decoder = load_stylegan2_ffhq(store, cfg.stylegan2)
        encoder, latent_avg = load_psp_ffhq_encoder(store, cfg.encoder.kind, cfg.encoder)
        self.decoder.load_state_dict(decoder.state_dict())
        self.encoder.load_state_dict(encoder.state_dict())
        if latent_avg is None and decoder.latent_avg is not None:
            latent_avg = decoder.latent_avg.expand(cfg.stylegan2.n_latent, -1)
        if latent_avg is None:
            log.warning("neither prior file holds latent_avg: W+ codes start from zero")
        else:
            self.w_avg.copy_(latent_avg)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Φ_E^feat: (c1, c2, c3) of faces x (B, 3, S, S) in [-1, 1], read at
        ``encoder_size`` (:meth:`training.priors.psp.PSPEncoder.features`)."""
        return self.encoder.features(resize(x, self.cfg.encoder_size))

    def synthesize(self, codes: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Render W+ offsets ``codes`` (B, n_latent, style_dim): StyleGAN2 on codes + w_avg with
        its stored noise. Returns (image (B, 3, image_size, image_size), unbounded, about
        [-1, 1]; the generator's per-resolution features 4 … size px)."""
        image, feats = self.decoder(codes + self.w_avg.to(codes.dtype), return_features=True)
        return resize(image, self.cfg.image_size), feats

    def check_inputs(self, target: torch.Tensor, source: torch.Tensor) -> None:
        """ValueError unless target and source are (B, 3, image_size, image_size)."""
        s = self.cfg.image_size
        for name, x in (("target", target), ("source", source)):
            if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
                raise ValueError(f"{name}: expected (B, 3, {s}, {s}), got {tuple(x.shape)}")
