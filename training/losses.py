"""Loss terms of the face-swap objectives (functional, shape-checked).

FaceShifter (thesis §4.2.5, seed 003): L = L_adv + λ_id L_id + λ_att L_att + λ_rec L_rec
(eq. 4.12) with hinge L_adv (eq. 4.8), L_id (eq. 4.9), L_att (eq. 4.10), L_rec (eq. 4.11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, mean over scales: E[max(0, 1 − D(x))] + E[max(0, 1 + D(ŷ))].

    real, fake : per-scale logits (B, 1, h, w). Returns a scalar.
    """
    if len(real) != len(fake) or not real:
        raise ValueError("need the same non-zero number of scales for real and fake")
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def hinge_g_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss, mean over scales: −E[D(ŷ)] (FaceShifter eq. 4.8)."""
    if not fake:
        raise ValueError("need at least one scale")
    return torch.stack([-f.mean() for f in fake]).mean()


def identity_loss(emb_swap: torch.Tensor, emb_source: torch.Tensor) -> torch.Tensor:
    """1 − cos(z_id(Ŷ), z_id(X_s)), batch mean (FaceShifter eq. 4.9). Inputs (B, D)."""
    if emb_swap.shape != emb_source.shape or emb_swap.ndim != 2:
        raise ValueError(f"need two (B, D) tensors, got {emb_swap.shape} and {emb_source.shape}")
    return (1 - F.cosine_similarity(emb_swap, emb_source, dim=1)).mean()


def attribute_loss(att_swap: list[torch.Tensor], att_target: list[torch.Tensor]) -> torch.Tensor:
    """½ Σ_k mean‖z_att^k(Ŷ) − z_att^k(X_t)‖² (FaceShifter eq. 4.10, per-element mean per
    level as in the reference implementations)."""
    if len(att_swap) != len(att_target) or not att_swap:
        raise ValueError("attribute lists differ in length")
    return (
        0.5
        * torch.stack([F.mse_loss(a, b) for a, b in zip(att_swap, att_target, strict=True)]).sum()
    )


def reconstruction_loss(
    swap: torch.Tensor, target: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """½ ‖Ŷ − X_t‖² on pairs whose source is the target (FaceShifter eq. 4.11), 0 elsewhere.

    swap, target : (B, 3, H, W); same : (B,) bool. Per-sample mean squared error averaged
    over the ``same`` samples (0 when there are none, keeping the graph).
    """
    if same.shape != (swap.shape[0],):
        raise ValueError(f"same must be (B,), got {tuple(same.shape)}")
    per_sample = 0.5 * (swap - target).pow(2).flatten(1).mean(1)
    weight = same.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)
