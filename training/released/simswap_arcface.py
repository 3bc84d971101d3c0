"""SimSwap's ArcFace (``arcface_model/arcface_checkpoint.tar``; the network of SimSwap's
``models/arcface_models.py``, from foamliu/InsightFace-v2: SE-LResNet-E-IR) as a plain module
with the published parameter names.

Layout (names as published): ``conv1`` 3×3 **without padding** → ``bn1`` → ``prelu`` (one
shared slope) → ``maxpool`` 2×2 → ``layer1…4`` of :class:`IRBlock` (stage 1 keeps the
stride, 2–4 stride 2) → ``bn2`` → ``dropout`` → flatten → ``fc`` (512·7·7 → 512) → ``bn3``
(BatchNorm1d). An :class:`IRBlock` is ``bn0 → conv1 (C_in→C_in) → bn1 → prelu → conv2
(C_in→C_out, stride) → bn2 → SE`` plus the shortcut, then the same ``prelu`` again.
Input (B, 3, 112, 112) ImageNet-normalised RGB; output (B, 512), not normalised.

The depth and whether the blocks carry squeeze-excitation are read from the converted
state dict (:func:`arch_from_state_dict`): the published file fixes them, not this code.
"""

from __future__ import annotations

import re

import torch
from torch import nn

#: Stage widths (InsightFace-v2 ResNet: 64, 128, 256, 512).
WIDTHS = (64, 128, 256, 512)


class SEBlock(nn.Module):
    """Squeeze-excitation: ``x · σ(fc(avgpool(x)))`` with ``fc`` = Linear(C, C/r) → PReLU →
    Linear(C/r, C) → Sigmoid (``se.fc.0``, ``.1``, ``.2``). (B, C, H, W) → same."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.PReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(self.avg_pool(x).flatten(1))
        return x * w[:, :, None, None]


class IRBlock(nn.Module):
    """Improved residual block (names ``bn0 conv1 bn1 prelu conv2 bn2 se downsample``).
    Shapes: (B, C_in, H, W) → (B, C_out, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int, use_se: bool):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SEBlock(cout) if use_se else None
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + shortcut)


class SimSwapArcFace(nn.Module):
    """SimSwap's ArcFace ResNet with the published names.

    Parameters
    ----------
    layers : IR blocks per stage (InsightFace-v2: r18 (2, 2, 2, 2), r50 (3, 4, 14, 3),
        r101 (3, 4, 23, 3)).
    use_se : squeeze-excitation in every block.

    ``forward(x)``: (B, 3, 112, 112) ImageNet-normalised RGB → (B, 512) raw embedding.
    ValueError on another input size.
    """

    def __init__(self, layers: tuple[int, ...], use_se: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, bias=False)  # no padding: 112 → 110
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)  # 110 → 55
        cin = WIDTHS[0]
        for i, (n, width) in enumerate(zip(layers, WIDTHS, strict=True), start=1):
            stride = 1 if i == 1 else 2
            blocks = [IRBlock(cin, width, stride, use_se)]
            blocks += [IRBlock(width, width, 1, use_se) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(WIDTHS[-1])
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(WIDTHS[-1] * 7 * 7, 512)
        self.bn3 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (3, 112, 112):
            raise ValueError(f"expected (B, 3, 112, 112), got {tuple(x.shape)}")
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        x = self.dropout(self.bn2(x)).flatten(1)
        return self.bn3(self.fc(x))


def arch_from_state_dict(state: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], bool]:
    """(blocks per stage, use_se) of a SimSwap ArcFace state dict, from its key names.

    Raises
    ------
    ValueError : a stage without blocks (not this network's state dict).
    """
    layers = []
    for i in range(1, 5):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
        if not blocks:
            raise ValueError(f"no blocks of layer{i}: not a SimSwap ArcFace state dict")
        layers.append(max(blocks) + 1)
    return tuple(layers), any(".se." in k for k in state)
