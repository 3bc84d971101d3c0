"""Deep3DFaceRecon's coefficient regressor (Deng et al. 2019, "Accurate 3D Face Reconstruction
with Weakly-Supervised Learning"; release sicxu/Deep3DFaceRecon_pytorch), for MAttFace's
3D-aware swapping loss (seed 004 eq. 17: the identity coefficients α ∈ R^80).

The release's ``ReconNetWrapper('resnet50', use_last_fc=False)`` (``models/networks.py``) is
a torchvision-layout ResNet-50 without its fully connected layer (``backbone.*``) followed by
seven 1×1 convolutions on the pooled 2048-d feature (``final_layers.0`` … ``.6``: identity 80,
expression 64, texture 80, angles 3, lighting 27, translation 2 + 1 = 257 coefficients). Its
checkpoint (``checkpoints/<name>/epoch_20.pth``) is ``{"net_recon": state dict, …}``. The
network reads 224×224 RGB in [0, 1] aligned by the release's five-point ``align_img``; here the
prepared crops are resized to 224 px (a different alignment: the project's approximation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Registry name of the published weights.
DEEP3D = "deep3dfacerecon_r50"
#: Output sizes of ``final_layers`` in order (id, exp, tex, angle, gamma, txy, tz).
COEFF_SIZES = (80, 64, 80, 3, 27, 2, 1)
#: Input side of the network, px.
INPUT_SIDE = 224


class Deep3DReconNet(nn.Module):
    """The release's ``ReconNetWrapper`` in its key layout (see module docstring).

    ``forward(x)``: x (B, 3, H, W) float RGB in [0, 1] (resized to 224 px) → (B, 257) float
    coefficients. :meth:`identity` returns the first 80 (α).
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.backbone = resnet50(weights=None)
        self.backbone.fc = nn.Identity()
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, n, 1) for n in COEFF_SIZES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != INPUT_SIDE or x.shape[-2] != INPUT_SIDE:
            x = F.interpolate(
                x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False
            )
        feat = self.backbone(x)[..., None, None]  # (B, 2048, 1, 1)
        return torch.cat([layer(feat) for layer in self.final_layers], 1).flatten(1)

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """α: (B, 80) identity coefficients of faces x (B, 3, H, W) in [0, 1]."""
        return self.forward(x)[:, : COEFF_SIZES[0]]


def deep3d_state_shapes() -> dict[str, tuple[int, ...]]:
    """Key → shape of the release's ``net_recon`` state dict (built on the meta device)."""
    with torch.device("meta"):
        net = Deep3DReconNet()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def load_deep3d_recon(store, device: str | torch.device = "cpu") -> Deep3DReconNet:
    """The frozen network of registry entry :data:`DEEP3D` from ``store``, in eval mode.
    Raises :class:`infra.models.ModelFileMissingError` when the file is absent, ValueError
    when it is not ``{"net_recon": …}`` in the release's layout."""
    obj = torch.load(store.path(DEEP3D), map_location="cpu", weights_only=True)
    state = obj.get("net_recon", obj) if isinstance(obj, dict) else None
    ref = deep3d_state_shapes()
    if not isinstance(state, dict):
        raise ValueError(f"{store.path(DEEP3D)}: expected a dict with 'net_recon'")
    bad = [k for k in ref if k not in state or tuple(state[k].shape) != ref[k]]
    if bad or len(state) != len(ref):
        raise ValueError(
            f"{store.path(DEEP3D)} is not Deep3DFaceRecon's ResNet-50 net_recon: missing or "
            f"misshaped {bad[:5]}, {len(state)} keys (expected {len(ref)})"
        )
    net = Deep3DReconNet()
    net.load_state_dict(state)
    return net.requires_grad_(False).eval().to(device)
