"""Frozen, differentiable PyTorch twins of registered ONNX models (onnx2torch)."""

from __future__ import annotations

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from infra.models import ModelStore
from infra.onnx_graph import batchable


class FrozenOnnxModule(nn.Module):
    """A registered ONNX model converted with onnx2torch, frozen and always in eval mode.

    :meth:`prepare` takes (B, 3, H, W) RGB in [-1, 1] at any square size, resizes it to the
    model's input side (antialiased bilinear) and applies the registry's normalisation
    ``(x_255 − mean) / std``. Subclasses define ``forward``. Built once and passed to
    losses; never loaded by path inside a loss.
    """

    def __init__(self, store: ModelStore, name: str):
        super().__init__()
        from onnx2torch import convert

        spec = store.spec(name)
        self.name = name
        self.input_size = int(spec.input.shape[-1])
        self.graph = batchable(onnx.load(str(store.path(name))))
        self.net = convert(self.graph)
        # [-1, 1] → 0..255 → (x - mean) / std, folded into one affine map.
        self.register_buffer("scale", torch.tensor(127.5 / spec.input.std))
        self.register_buffer("shift", torch.tensor((127.5 - spec.input.mean) / spec.input.std))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenOnnxModule:
        """Stays in eval mode: a frozen helper."""
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return x.float() * self.scale + self.shift
