"""SimSwap generator (Chen et al. 2020; Facke §2.1.3, seed 002).

Encoder (7×7 stem + stride-2 convs) → ID-injection module: ``id_blocks`` ID blocks, residual
blocks whose two instance-normalised 3×3 convs are modulated by AdaIN with scale and bias
predicted from the source identity vector → decoder (×2 bilinear upsampling + 3×3 conv) →
7×7 conv → tanh. The paper's 224-px network is ``SimSwapConfig(image_size=224,
base_channels=64, max_channels=512, num_down=3, id_blocks=9)``. Unlike the release, the
output passes through tanh so every swapper in this project produces images in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SimSwapConfig:
    """Architecture of :class:`SimSwapGenerator`.

    Attributes
    ----------
    image_size : input/output side, px, divisible by 2^num_down.
    id_dim : identity embedding size D.
    base_channels : channels after the stem (paper: 64).
    max_channels : channel cap, the bottleneck width (paper: 512).
    num_down : stride-2 downsamplings (paper: 3 at 224 px, 4 at 512 px).
    id_blocks : ID blocks in the injection module (paper: 9).
    """

    image_size: int = 224
    id_dim: int = 512
    base_channels: int = 64
    max_channels: int = 512
    num_down: int = 3
    id_blocks: int = 9

    def __post_init__(self) -> None:
        if self.image_size % (2**self.num_down):
            raise ValueError(f"image_size {self.image_size} not divisible by 2^{self.num_down}")
        if min(self.id_dim, self.base_channels, self.num_down, self.id_blocks) < 1:
            raise ValueError(f"invalid SimSwap config {self}")

    @property
    def channels(self) -> list[int]:
        """Channels after the stem and after each downsampling."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.num_down + 1)]


class AdaIN(nn.Module):
    """Instance norm (no affine) then ``x · (1 + γ(z)) + β(z)`` with γ, β linear in the
    identity vector z (SimSwap ``ApplyStyle``). Shapes: x (B, C, H, W), z (B, D)."""

    def __init__(self, channels: int, id_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.style = nn.Linear(id_dim, 2 * channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(z)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class IDBlock(nn.Module):
    """ID block: x + AdaIN(conv(ReLU(AdaIN(conv(x), z))), z), reflection-padded 3×3 convs."""

    def __init__(self, channels: int, id_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.ada1 = AdaIN(channels, id_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.ada2 = AdaIN(channels, id_dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.ada1(self.conv1(x), z))
        return x + self.ada2(self.conv2(y), z)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SimSwapGenerator(nn.Module):
    """``forward(target, z_id)``: target (B, 3, S, S) in [-1, 1], z_id (B, D) →
    (swapped (B, 3, S, S) in [-1, 1], None)."""

    def __init__(self, cfg: SimSwapConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c[0], 7, padding=3, padding_mode="reflect"),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(True),
        )
        self.down = nn.Sequential(*[_conv_bn_relu(c[i], c[i + 1], 2) for i in range(cfg.num_down)])
        self.id_blocks = nn.ModuleList(IDBlock(c[-1], cfg.id_dim) for _ in range(cfg.id_blocks))
        self.up = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    _conv_bn_relu(c[i + 1], c[i]),
                )
                for i in reversed(range(cfg.num_down))
            ]
        )
        self.head = nn.Conv2d(c[0], 3, 7, padding=3, padding_mode="reflect")

    def forward(self, target: torch.Tensor, z_id: torch.Tensor) -> tuple[torch.Tensor, None]:
        S, D = self.cfg.image_size, self.cfg.id_dim
        if target.shape[1:] != (3, S, S) or z_id.ndim != 2 or z_id.shape[1] != D:
            raise ValueError(
                f"expected (B, 3, {S}, {S}) and (B, {D}), got "
                f"{tuple(target.shape)} and {tuple(z_id.shape)}"
            )
        h = self.down(self.stem(target))
        for block in self.id_blocks:
            h = block(h, z_id)
        return torch.tanh(self.head(self.up(h))), None
