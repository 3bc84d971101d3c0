"""FaceShifter AEI-Net (Li et al. 2020; FaceShifter thesis §4.2, seed 003).

* :class:`AttributeEncoder` — multi-level attribute encoder, a U-Net whose decoder
  features are the attribute embeddings ``z_att^1 … z_att^n`` (eq. 4.2).
* :class:`AADLayer` — adaptive attentional denormalisation (eq. 4.3–4.7).
* :class:`AADResBlk` — two AAD → ReLU → 3×3 conv units plus a shortcut.
* :class:`AADGenerator` — cascade of AAD ResBlks from 2×2 to the image size.
* :class:`AEINet` — attribute encoder + AAD generator (the trainable "generator").

Widths scale with ``base_channels``/``max_channels`` and depth with ``image_size``; the
paper's 256-px network is ``AEINetConfig()`` (256 px, encoder 32…1024 channels, 8 attribute
levels). The identity size D comes from the dataset card, not the config.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig


class AEINetConfig(StrictConfig):
    """Architecture of :class:`AEINet` (FaceShifter paper: 256 px, 32 → 1024 channels)."""

    image_size: int = Field(256, description="Input/output side, px; a power of two ≥ 16.")
    base_channels: int = Field(32, ge=1, description="Channels of the first encoder level.")
    max_channels: int = Field(1024, ge=1, description="Cap on channels per level.")
    aad_units: int = Field(
        2,
        ge=1,
        description="AAD → ReLU → 3×3 conv units per AAD ResBlk (FaceShifter 2; GHOST's setting, "
        "its release uses 2).",
    )
    aad_norm: Literal["batch", "instance"] = Field(
        "batch",
        description="AAD normalisation: batch statistics (thesis eq. 4.4–4.5) or instance "
        "norm (GHOST release `AADLayer`, taotaonice).",
    )
    conv_bias: bool = Field(
        True, description="Bias in the AAD ResBlk 3×3 convs (GHOST release: none)."
    )
    align_corners: bool = Field(
        False,
        description="Bilinear resampling of z_att^n and between AAD ResBlks with "
        "align_corners=True (GHOST release `AEI_Net.py`), or False (this project's default).",
    )
    init: Literal["pytorch", "xavier"] = Field(
        "pytorch",
        description="Weights at start: PyTorch's defaults, or GHOST's release `weight_init` "
        "(Xavier-normal conv and transposed-conv weights, linear weights N(0, 1e-3), zero "
        "linear biases).",
    )

    @model_validator(mode="after")
    def _check(self) -> AEINetConfig:
        n = math.log2(self.image_size) if self.image_size > 0 else 0.5
        if self.image_size < 16 or n != int(n):
            raise ValueError(f"image_size must be a power of two >= 16, got {self.image_size}")
        if self.max_channels < self.base_channels:
            raise ValueError(f"max_channels {self.max_channels} < base_channels")
        return self

    @property
    def num_down(self) -> int:
        """Encoder levels: image_size → 2×2 (7 at 256 px)."""
        return int(math.log2(self.image_size)) - 1

    @property
    def encoder_channels(self) -> list[int]:
        """Channels of encoder levels 0 … num_down-1 (paper: 32, 64, …, 1024, 1024)."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.num_down)]

    @property
    def attribute_channels(self) -> list[int]:
        """Channels of z_att^1 … z_att^n, n = num_down + 1 (paper: 1024, 2048, 1024, 512,
        256, 128, 64, 64)."""
        c = self.encoder_channels
        levels = [c[-1]] + [2 * c[self.num_down - 1 - j] for j in range(1, self.num_down)]
        return [*levels, levels[-1]]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class AttributeEncoder(nn.Module):
    """Multi-level attribute encoder (U-Net), FaceShifter eq. 4.2.

    Input (B, 3, S, S) in [-1, 1]; output a list of n = log2(S) tensors, z_att^k of shape
    (B, attribute_channels[k-1], 2^k, 2^k) for k < n and (B, ·, S, S) for k = n.
    """

    def __init__(self, cfg: AEINetConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.encoder_channels
        self.down = nn.ModuleList(
            _down(cin, cout) for cin, cout in zip([3, *c[:-1]], c, strict=True)
        )
        att = cfg.attribute_channels
        self.up = nn.ModuleList(
            _up(att[j - 1], c[cfg.num_down - 1 - j]) for j in range(1, cfg.num_down)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        S = self.cfg.image_size
        if x.shape[1:] != (3, S, S):
            raise ValueError(f"expected (B, 3, {S}, {S}), got {tuple(x.shape)}")
        feats = []
        h = x
        for layer in self.down:
            h = layer(h)
            feats.append(h)
        z = [feats[-1]]  # z_att^1 at 2×2
        for j, layer in enumerate(self.up, start=1):
            z.append(torch.cat([layer(z[-1]), feats[self.cfg.num_down - 1 - j]], dim=1))
        z.append(
            F.interpolate(z[-1], size=(S, S), mode="bilinear", align_corners=self.cfg.align_corners)
        )
        return z


class AADLayer(nn.Module):
    """Adaptive attentional denormalisation, FaceShifter eq. 4.3–4.7.

    ``h̄ = BN(h_in)`` (batch statistics, eq. 4.3–4.5, no affine; ``norm="instance"``: per
    sample and channel, as the GHOST release);
    ``A = γ_att ⊗ h̄ + β_att`` with γ_att, β_att 1×1 convs of z_att (eq. 4.6);
    ``I = γ_id ⊗ h̄ + β_id`` with γ_id, β_id linear maps of z_id (eq. 4.6);
    ``M = σ(conv(h̄))`` one-channel attention mask; ``h_out = (1 − M) ⊗ A + M ⊗ I`` (eq. 4.7).

    Shapes: h_in (B, C, H, W), z_att (B, C_att, H, W), z_id (B, D) → (B, C, H, W).
    """

    def __init__(self, channels: int, att_channels: int, id_dim: int, norm: str = "batch"):
        super().__init__()
        norms = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}
        self.norm = norms[norm](channels, affine=False)
        self.gamma_att = nn.Conv2d(att_channels, channels, 1)
        self.beta_att = nn.Conv2d(att_channels, channels, 1)
        self.gamma_id = nn.Linear(id_dim, channels)
        self.beta_id = nn.Linear(id_dim, channels)
        self.mask = nn.Conv2d(channels, 1, 1)

    def forward(self, h: torch.Tensor, z_att: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        h_bar = self.norm(h)
        a = self.gamma_att(z_att) * h_bar + self.beta_att(z_att)
        i = self.gamma_id(z_id)[:, :, None, None] * h_bar + self.beta_id(z_id)[:, :, None, None]
        m = torch.sigmoid(self.mask(h_bar))
        return (1 - m) * a + m * i


class AADResBlk(nn.Module):
    """AAD residual block (FaceShifter Fig. 4.1b): ``units`` × (AAD → ReLU → 3×3 conv), the
    last conv changing C_in to C_out, plus a shortcut (AAD → ReLU → 3×3 conv) when the
    channel count changes. FaceShifter uses 2 units; GHOST makes the number a setting.

    Shapes: h (B, C_in, H, W) → (B, C_out, H, W).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        att_channels: int,
        id_dim: int,
        units: int = 2,
        norm: str = "batch",
        bias: bool = True,
    ):
        super().__init__()
        self.aad = nn.ModuleList(AADLayer(cin, att_channels, id_dim, norm) for _ in range(units))
        self.conv = nn.ModuleList(
            nn.Conv2d(cin, cout if i == units - 1 else cin, 3, padding=1, bias=bias)
            for i in range(units)
        )
        self.shortcut = None
        if cin != cout:
            self.aad_s = AADLayer(cin, att_channels, id_dim, norm)
            self.shortcut = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)

    def forward(self, h: torch.Tensor, z_att: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        x = h
        for aad, conv in zip(self.aad, self.conv, strict=True):
            x = conv(F.relu(aad(x, z_att, z_id)))
        if self.shortcut is not None:
            h = self.shortcut(F.relu(self.aad_s(h, z_att, z_id)))
        return x + h


class AADGenerator(nn.Module):
    """AAD generator: z_id → 2×2 map (transposed conv) → n AAD ResBlks, ×2 upsampling
    between them → tanh image.

    Shapes: z_att list as from :class:`AttributeEncoder`, z_id (B, D) → (B, 3, S, S).
    """

    def __init__(self, cfg: AEINetConfig, id_dim: int):
        super().__init__()
        att = cfg.attribute_channels
        top = cfg.encoder_channels[-1]
        self.align_corners = cfg.align_corners
        self.stem = nn.ConvTranspose2d(id_dim, top, kernel_size=2)
        outs = [min(a, top) for a in att[:-1]] + [3]
        ins = [top, *outs[:-1]]
        self.blocks = nn.ModuleList(
            AADResBlk(cin, cout, a, id_dim, cfg.aad_units, cfg.aad_norm, cfg.conv_bias)
            for cin, cout, a in zip(ins, outs, att, strict=True)
        )

    def forward(self, z_att: list[torch.Tensor], z_id: torch.Tensor) -> torch.Tensor:
        if len(z_att) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} attribute levels, got {len(z_att)}")
        h = self.stem(z_id[:, :, None, None])
        for k, block in enumerate(self.blocks):
            h = block(h, z_att[k], z_id)
            if k < len(self.blocks) - 1:
                h = F.interpolate(
                    h, scale_factor=2, mode="bilinear", align_corners=self.align_corners
                )
        return torch.tanh(h)


@torch.no_grad()
def xavier_init(m: nn.Module) -> None:
    """GHOST release ``weight_init``: Xavier-normal weights of (transposed) convs, N(0, 1e-3)
    linear weights (the identity projections γ_id, β_id) and zero linear biases."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.xavier_normal_(m.weight)
    elif isinstance(m, nn.Linear):
        m.weight.normal_(0, 1e-3)
        m.bias.zero_()


class AEINet(nn.Module):
    """Adaptive Embedding Integration Network: the trainable part of FaceShifter.

    ``forward(target, z_id)``: target (B, 3, S, S) in [-1, 1], z_id (B, D) L2-normalised
    source identity (D = ``id_dim``, the dataset's embedding size) → (swapped (B, 3, S, S)
    in [-1, 1], z_att(target) list). ValueError on other shapes.
    """

    def __init__(self, cfg: AEINetConfig, id_dim: int):
        super().__init__()
        if id_dim < 1:
            raise ValueError(f"id_dim must be >= 1, got {id_dim}")
        self.cfg, self.id_dim = cfg, id_dim
        self.encoder = AttributeEncoder(cfg)
        self.generator = AADGenerator(cfg, id_dim)
        if cfg.init == "xavier":
            self.apply(xavier_init)

    def forward(
        self, target: torch.Tensor, z_id: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if z_id.ndim != 2 or z_id.shape[1] != self.id_dim:
            raise ValueError(f"expected z_id (B, {self.id_dim}), got {tuple(z_id.shape)}")
        z_att = self.encoder(target)
        return self.generator(z_att, z_id), z_att

    def attributes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """z_att(x), used by the attribute loss on the swapped face (eq. 4.10)."""
        return self.encoder(x)
