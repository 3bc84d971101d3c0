"""ArcFace IResNet (insightface ``recognition/arcface_torch/backbones/iresnet.py``) as a plain
module whose parameter names are the published ones, so ``backbone.pth`` files load with
no renaming (GHOST's ``arcface_model/backbone.pth`` is an IResNet-100 of this layout).

Layout (names as published): ``conv1`` 3×3 → ``bn1`` → ``prelu`` → ``layer1…4`` of
:class:`IBasicBlock` (the first of each stage strides 2 with a 1×1 ``downsample``) →
``bn2`` → flatten → ``dropout`` (p = 0) → ``fc`` (512·7·7 → 512) → ``features``
(BatchNorm1d whose weight the source fixes at 1). Input (B, 3, 112, 112) RGB in [-1, 1];
output (B, 512), not normalised (arcface_torch normalises outside the backbone).
"""

from __future__ import annotations

import torch
from torch import nn

#: Blocks per stage of IResNet-100 (arcface_torch ``iresnet100``).
IRESNET100_LAYERS = (3, 13, 30, 3)
#: Stage widths (arcface_torch: 64, 128, 256, 512).
WIDTHS = (64, 128, 256, 512)


class IBasicBlock(nn.Module):
    """``bn1 → conv1 (3×3) → bn2 → prelu → conv2 (3×3, stride) → bn3`` plus the shortcut
    (``downsample``: 1×1 conv + BN when the shape changes). BN ε 1e-5, convs bias-free, as
    arcface_torch. Shapes: (B, C_in, H, W) → (B, C_out, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace IResNet with arcface_torch's parameter names.

    Parameters
    ----------
    layers : blocks per stage (IResNet-100: :data:`IRESNET100_LAYERS`).
    num_features : embedding size (512).

    ``forward(x)``: (B, 3, 112, 112) RGB in [-1, 1] → (B, num_features) raw embedding.
    ValueError on another input size (the ``fc`` is sized for 7×7 maps).
    """

    def __init__(self, layers: tuple[int, ...] = IRESNET100_LAYERS, num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=1e-5)
        self.prelu = nn.PReLU(WIDTHS[0])
        cin = WIDTHS[0]
        for i, (n, width) in enumerate(zip(layers, WIDTHS, strict=True), start=1):
            blocks = [IBasicBlock(cin, width, 2)] + [
                IBasicBlock(width, width, 1) for _ in range(n - 1)
            ]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(WIDTHS[-1], eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(WIDTHS[-1] * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (3, 112, 112):
            raise ValueError(f"expected (B, 3, 112, 112), got {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))
