"""Multi-scale transformation network of Korshunova et al. 2017 (seed 000 §II.A, Fig. 1–2).

One network per source identity: the target face is area-downsampled to every branch side
``min_scale · 2^i`` up to the crop side (seed 000: six scales, 8×8 … 256×256); each branch runs
``blocks`` residual blocks (Fig. 2) on its own resolution, is upsampled with nearest-neighbour
interpolation to the crop side, and the multi-scale combiner concatenates all branches along
the channel axis; final convolutions map the result to RGB. A face mask (seed 000: "a
Mediapipe-derived facial mask restricts the transformation to facial areas") keeps the target
outside the face. Seed 000 gives no widths: ``channels``, ``blocks`` and ``combiner_channels``
defaults are this project's choice, as are the tanh output (every swapper of the project
produces images in [-1, 1]) and the identity skip's 1×1 projection when widths differ.
Poisson blending (seed 000) is a post-processing step, not part of this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


class KorshunovaNetConfig(StrictConfig):
    """Architecture of :class:`KorshunovaNet` (seed 000 §II.A: six branches, 8 … 256 px;
    the widths are not given there and are this project's choice)."""

    image_size: int = Field(
        256, description="Crop side S, px; a power of two >= min_scale (seed 000: 256)."
    )
    min_scale: int = Field(
        8, ge=1, description="Side of the coarsest branch, px; a power of two (seed 000: 8)."
    )
    channels: int = Field(
        32, ge=1, description="Feature maps n of every conv of a branch (project's choice)."
    )
    blocks: int = Field(2, ge=1, description="Residual blocks per branch (project's choice).")
    combiner_channels: int = Field(
        64, ge=1, description="Width of the 3×3 conv after the combiner (project's choice)."
    )

    @model_validator(mode="after")
    def _check(self) -> KorshunovaNetConfig:
        if not _is_pow2(self.min_scale):
            raise ValueError(f"min_scale must be a power of two, got {self.min_scale}")
        if not _is_pow2(self.image_size) or self.image_size < self.min_scale:
            raise ValueError(
                f"image_size must be a power of two >= min_scale {self.min_scale}, "
                f"got {self.image_size}"
            )
        return self

    @property
    def scales(self) -> list[int]:
        """Branch sides, coarse to fine: min_scale, 2·min_scale, …, image_size."""
        out, s = [], self.min_scale
        while s <= self.image_size:
            out.append(s)
            s *= 2
        return out


class ResidualBlock(nn.Module):
    """Fig. 2 of seed 000: 3×3 conv → ReLU → BN → 3×3 conv → ReLU → BN → 1×1 conv, all with
    ``n`` feature maps, plus the identity skip (a 1×1 projection when ``cin != n``).
    Shapes: (B, cin, H, W) → (B, n, H, W), float."""

    def __init__(self, cin: int, n: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, n, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(n),
            nn.Conv2d(n, n, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(n),
            nn.Conv2d(n, n, 1),
        )
        self.skip = nn.Identity() if cin == n else nn.Conv2d(cin, n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class KorshunovaNet(nn.Module):
    """Multi-scale face-swap network (Korshunova et al. 2017; seed 000 §II.A).

    ``forward(target, z_id, face_mask=None) -> (out, None)``:

    - target: (B, 3, S, S) float in [-1, 1], S = ``cfg.image_size``;
    - z_id: (B, D) with D = ``id_dim``; accepted for the project's common generator
      interface and ignored (one network is trained per source identity);
    - face_mask: (B, 1, S, S) float in [0, 1] or None;
    - out: (B, 3, S, S) in [-1, 1]: ``m·y + (1 − m)·target`` with the network's image y when
      a mask is given (pixels with m = 0 are the target's exactly), else y.

    ValueError (one line, expected vs got shapes) on other shapes.
    """

    extra_inputs = ("face_mask",)

    def __init__(self, cfg: KorshunovaNetConfig, id_dim: int):
        super().__init__()
        if id_dim < 1:
            raise ValueError(f"id_dim must be >= 1, got {id_dim}")
        self.cfg, self.id_dim = cfg, id_dim
        n = cfg.channels
        self.branches = nn.ModuleList(
            nn.Sequential(*[ResidualBlock(3 if i == 0 else n, n) for i in range(cfg.blocks)])
            for _ in cfg.scales
        )
        self.head = nn.Sequential(
            nn.Conv2d(n * len(cfg.scales), cfg.combiner_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(cfg.combiner_channels),
            nn.Conv2d(cfg.combiner_channels, 3, 1),
        )

    def _check_shapes(
        self, target: torch.Tensor, z_id: torch.Tensor, face_mask: torch.Tensor | None
    ) -> None:
        S, D = self.cfg.image_size, self.id_dim
        B = target.shape[0] if target.ndim == 4 else "B"
        bad = target.ndim != 4 or tuple(target.shape[1:]) != (3, S, S)
        bad |= tuple(z_id.shape) != (B, D)
        bad |= face_mask is not None and tuple(face_mask.shape) != (B, 1, S, S)
        if bad:
            got_mask = None if face_mask is None else tuple(face_mask.shape)
            raise ValueError(
                f"expected target (B, 3, {S}, {S}), z_id ({B}, {D}), face_mask ({B}, 1, {S}, "
                f"{S}) or None; got {tuple(target.shape)}, {tuple(z_id.shape)}, {got_mask}"
            )

    def forward(
        self, target: torch.Tensor, z_id: torch.Tensor, face_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        self._check_shapes(target, z_id, face_mask)
        S = self.cfg.image_size
        feats = []
        for side, branch in zip(self.cfg.scales, self.branches, strict=True):
            x = target if side == S else F.interpolate(target, size=(side, side), mode="area")
            h = branch(x)
            feats.append(h if side == S else F.interpolate(h, size=(S, S), mode="nearest"))
        y = torch.tanh(self.head(torch.cat(feats, dim=1)))
        if face_mask is None:
            return y, None
        m = face_mask.to(y.dtype)
        return m * y + (1 - m) * target, None
