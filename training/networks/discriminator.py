"""Multi-scale PatchGAN discriminator (pix2pixHD, Wang et al. 2018), as used by
FaceShifter (thesis §4.2.5), GHOST (release: 5 layers, instance norm, pix2pixHD's padding 2,
3 scales) and SimSwap (release ``fs_networks.Discriminator``: 4 stride-2 convs, batch norm,
padding 1, on 2 scales)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from infra.config import StrictConfig


class DiscriminatorConfig(StrictConfig):
    """Architecture of :class:`MultiscaleDiscriminator`. Defaults: pix2pixHD's widths
    (64 / 512 / 3 layers / 3 scales) and instance norm, with padding 1 where pix2pixHD pads
    its 4×4 convs by 2 (the project's choice; GHOST's section sets 2)."""

    base_channels: int = Field(64, ge=1, description="Channels of the first conv.")
    max_channels: int = Field(512, ge=1, description="Cap on channels per layer.")
    num_layers: int = Field(3, ge=1, description="Stride-2 convs per scale.")
    num_scales: int = Field(3, ge=1, description="Image scales, each half the previous.")
    norm: Literal["instance", "batch"] = Field(
        "instance", description="Normalisation after every conv but the first and the last."
    )
    padding: int = Field(
        1, ge=0, le=3, description="Padding of the 4×4 convs (pix2pixHD and GHOST: 2; SimSwap: 1)."
    )


#: Normalisation layers by name (no affine for instance norm, as pix2pixHD's default).
NORMS = {"instance": nn.InstanceNorm2d, "batch": nn.BatchNorm2d}


class PatchDiscriminator(nn.Module):
    """N-layer PatchGAN. Input (B, 3, H, W) → list of features, the last being the patch
    logits (B, 1, h, w) with h ≈ H / 2^num_layers − 2."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        c = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.num_layers + 1)]
        pad, norm = cfg.padding, NORMS[cfg.norm]
        layers = [nn.Sequential(nn.Conv2d(3, c[0], 4, 2, pad), nn.LeakyReLU(0.2, inplace=True))]
        for i in range(1, cfg.num_layers):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c[i - 1], c[i], 4, 2, pad),
                    norm(c[i]),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
        last = cfg.num_layers
        layers.append(
            nn.Sequential(
                nn.Conv2d(c[last - 1], c[last], 4, 1, pad),
                norm(c[last]),
                nn.LeakyReLU(0.2, inplace=True),
            )
        )
        layers.append(nn.Conv2d(c[last], 1, 4, 1, pad))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs on the image downsampled ×2 each time (3×3 average pool).

    ``forward(x)``: x (B, 3, H, W) in [-1, 1] → list over scales of feature lists; the
    last entry of each list is that scale's logits. Use :func:`logits` for losses and
    the other entries for (weak) feature matching.
    """

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.scales = nn.ModuleList(PatchDiscriminator(cfg) for _ in range(cfg.num_scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def logits(features: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Per-scale patch logits from :class:`MultiscaleDiscriminator` output."""
    return [f[-1] for f in features]
