"""SimSwap generator (Chen et al. 2020; Facke §2.1.3, seed 002).

Encoder (7×7 stem + stride-2 convs) → ID-injection module: ``id_blocks`` ID blocks, residual
blocks whose two instance-normalised 3×3 convs are modulated by AdaIN with scale and bias
predicted from the source identity vector → decoder (×2 bilinear upsampling + 3×3 conv) →
7×7 conv → tanh. The paper's network is ``SimSwapGeneratorConfig(image_size=224)`` (64 → 512
channels, 3 downsamplings, 9 ID blocks); this project's default is 256 px, its own choice,
so the crop keeps the ArcFace template at twice the recogniser's 112 px. Unlike the release,
the output passes through tanh so every swapper in this project produces images in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig


class SimSwapGeneratorConfig(StrictConfig):
    """Architecture of :class:`SimSwapGenerator` (paper: 224 px, 64 → 512 channels,
    3 downsamplings, 9 ID blocks; SimSwap-512: 4 downsamplings)."""

    image_size: int = Field(
        256, description="Input/output side, px, divisible by 2^num_down (paper 224; see module)."
    )
    base_channels: int = Field(64, ge=1, description="Channels after the 7×7 stem.")
    max_channels: int = Field(512, ge=1, description="Channel cap, the ID-injection width.")
    num_down: int = Field(3, ge=1, description="Stride-2 downsamplings.")
    id_blocks: int = Field(9, ge=1, description="ID blocks (AdaIN residual blocks).")
    adain_eps: float = Field(
        1e-5,
        gt=0,
        description="ε of the ID blocks' instance norm (PyTorch's 1e-5; the release's own "
        "`InstanceNorm` in `models/fs_networks.py` uses 1e-8).",
    )

    @model_validator(mode="after")
    def _check(self) -> SimSwapGeneratorConfig:
        if self.image_size < 1 or self.image_size % (2**self.num_down):
            raise ValueError(f"image_size {self.image_size} not divisible by 2^{self.num_down}")
        return self

    @property
    def channels(self) -> list[int]:
        """Channels after the stem and after each downsampling."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.num_down + 1)]


class AdaIN(nn.Module):
    """Instance norm (no affine) then ``x · (1 + γ(z)) + β(z)`` with γ, β linear in the
    identity vector z (SimSwap ``ApplyStyle``). Shapes: x (B, C, H, W), z (B, D)."""

    def __init__(self, channels: int, id_dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False, eps=eps)
        self.style = nn.Linear(id_dim, 2 * channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(z)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class IDBlock(nn.Module):
    """ID block: x + AdaIN(conv(ReLU(AdaIN(conv(x), z))), z), reflection-padded 3×3 convs;
    ``eps`` of the AdaIN instance norms."""

    def __init__(self, channels: int, id_dim: int, eps: float = 1e-5):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.ada1 = AdaIN(channels, id_dim, eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.ada2 = AdaIN(channels, id_dim, eps)

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
    """``forward(target, z_id)``: target (B, 3, S, S) in [-1, 1], z_id (B, D) with
    D = ``id_dim`` → (swapped (B, 3, S, S) in [-1, 1], None). ValueError on other shapes."""

    def __init__(self, cfg: SimSwapGeneratorConfig, id_dim: int):
        super().__init__()
        if id_dim < 1:
            raise ValueError(f"id_dim must be >= 1, got {id_dim}")
        self.cfg, self.id_dim = cfg, id_dim
        c = cfg.channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, c[0], 7, padding=3, padding_mode="reflect"),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(True),
        )
        self.down = nn.Sequential(*[_conv_bn_relu(c[i], c[i + 1], 2) for i in range(cfg.num_down)])
        self.id_blocks = nn.ModuleList(
            IDBlock(c[-1], id_dim, cfg.adain_eps) for _ in range(cfg.id_blocks)
        )
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

    def check_inputs(self, target: torch.Tensor, z_id: torch.Tensor) -> None:
        """ValueError unless target is (B, 3, S, S) and z_id (B, D)."""
        S, D = self.cfg.image_size, self.id_dim
        if target.shape[1:] != (3, S, S) or z_id.ndim != 2 or z_id.shape[1] != D:
            raise ValueError(
                f"expected (B, 3, {S}, {S}) and (B, {D}), got "
                f"{tuple(target.shape)} and {tuple(z_id.shape)}"
            )

    def encode(self, target: torch.Tensor) -> torch.Tensor:
        """Encoder: (B, 3, S, S) → (B, C, S / 2^n, S / 2^n), C = the ID-injection width."""
        return self.down(self.stem(target))

    def inject(self, h: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        """ID-injection module: the ID blocks on ``h`` with identity vectors z_id (B, D)."""
        for block in self.id_blocks:
            h = block(h, z_id)
        return h

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder: bottleneck features → (B, 3, S, S) in [-1, 1]."""
        return torch.tanh(self.head(self.up(h)))

    def forward(self, target: torch.Tensor, z_id: torch.Tensor) -> tuple[torch.Tensor, None]:
        self.check_inputs(target, z_id)
        return self.decode(self.inject(self.encode(target), z_id)), None
