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


def hinge_g_real_loss(fake: list[torch.Tensor], weight: torch.Tensor | None = None) -> torch.Tensor:
    """GHOST's generator hinge: E[max(0, 1 − D(ŷ))] per scale, summed over scales, averaged
    over the samples with ``weight`` (B,) (GHOST: the different-person pairs)."""
    per_sample = torch.stack([F.relu(1 - f).flatten(1).mean(1) for f in fake]).sum(0)  # (B,)
    if weight is None:
        return per_sample.mean()
    w = weight.to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum().clamp_min(1e-4)


def masked_l1(swap: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """‖I_R − I_T‖₁ averaged over the samples where ``mask`` (B,) holds (SimSwap eq. 4,
    intra-ID pairs only); 0 with the graph kept when there are none."""
    per_sample = (swap - target).abs().flatten(1).mean(1)
    w = mask.to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum().clamp_min(1.0)


def weak_feature_matching(
    fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], from_layer: int
) -> torch.Tensor:
    """SimSwap weak feature matching (eq. 8): Σ_scales Σ_{i ≥ m} mean |D⁽ⁱ⁾(I_R) − D⁽ⁱ⁾(I_T)|
    over the last discriminator layers only (``from_layer`` m, negative = from the end;
    the logits layer is excluded). Inputs: per-scale feature lists of the two images."""
    terms = []
    for f_scale, r_scale in zip(fake, real, strict=True):
        layers = list(range(len(f_scale) - 1))[from_layer:]
        terms += [F.l1_loss(f_scale[i], r_scale[i].detach()) for i in layers]
    if not terms:
        raise ValueError(f"no discriminator layers selected by from_layer={from_layer}")
    return torch.stack(terms).sum()


def gradient_penalty(d_logits_fn, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(‖∇_x̂ D(x̂)‖₂ − 1)² on x̂ = εx + (1 − ε)x̃, ε ~ U[0, 1] per sample (SimSwap eq. 7,
    WGAN-GP). ``d_logits_fn(x)`` returns per-scale logits (B, …); a sample's D output is the
    sum over scales of its mean logit, and the outputs are summed over the batch so each
    sample's gradient is its own (a batch mean would shrink it by 1/B)."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = torch.stack([o.flatten(1).mean(1).sum() for o in d_logits_fn(x)]).sum()
    (grad,) = torch.autograd.grad(out, x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def gaussian_heatmaps(points: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Differentiable heatmaps: (B, K, 2) points in [0, 1] image coordinates →
    (B, K, size, size) Gaussians of std ``sigma`` heatmap pixels."""
    grid = (torch.arange(size, device=points.device, dtype=points.dtype) + 0.5) / size
    px = points[..., 0:1, None] - grid[None, None, None, :]  # (B, K, 1, W)
    py = points[..., 1:2, None] - grid[None, None, None, :]  # (B, K, 1, H)
    s = sigma / size
    return torch.exp(-(py.transpose(-1, -2) ** 2 + px**2) / (2 * s * s))


def eye_heatmap_loss(
    eyes_swap: torch.Tensor, eyes_target: torch.Tensor, size: int, sigma: float
) -> torch.Tensor:
    """GHOST eye loss: L2 between eye-landmark heatmaps of the swap and the target
    (seed 001 §III.B). Inputs (B, K, 2) eye landmarks in [0, 1] coordinates."""
    return F.mse_loss(
        gaussian_heatmaps(eyes_swap, size, sigma),
        gaussian_heatmaps(eyes_target.detach(), size, sigma),
    )


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """D_KL(N(μ, σ²) ‖ N(0, I)) = −½ (1 + log σ² − μ² − σ²) per latent element, averaged
    over the batch and the latent's elements (Facke eq. 9's posterior term, seed 002
    §2.2.1). The per-element mean keeps its weight independent of the latent's size (the
    project's choice; Facke gives no normalisation). mu, logvar : (B, …) same shape."""
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()


def weighted_mse(swap: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i · mean((Ŷ_i − X_t,i)²) / B: per-pair MSE reconstruction with a weight per pair
    (Facke §2.2.1 takes the MSE as the VAE's reconstruction term; §2.2.4 weights it high on
    intra-ID and low on inter-ID pairs). swap, target : (B, 3, H, W); weight : (B,)."""
    if weight.shape != (swap.shape[0],):
        raise ValueError(f"weight must be (B,), got {tuple(weight.shape)}")
    per_sample = (swap - target).pow(2).flatten(1).mean(1)
    return (per_sample * weight.to(per_sample.dtype)).mean()


def w_norm_loss(codes: torch.Tensor) -> torch.Tensor:
    """pSp's W-norm loss (Richardson et al. 2021, ``criteria/w_norm.py`` with
    ``start_from_latent_avg``), which RAFSwap's release trains with and seed 000 §III.C added
    against collapsing style vectors: the batch mean of ‖w − w̄‖₂ over all W+ rows and
    dimensions. codes : (B, n_latent, style_dim) offsets w − w̄ from the average latent.
    Returns a float32 scalar ≥ 0."""
    return codes.float().flatten(1).norm(dim=1).mean()


def mask_binary_loss(mask: torch.Tensor) -> torch.Tensor:
    """Seed 000 §III.C's "binary loss centering the values around a mean of 0.5" (its formula
    is not given; this is the project's): (mean(m) − 0.5)², m (B, 1, H, W) in [0, 1]. It
    stops a mask collapsing to all 0 (the target) or all 1."""
    return (mask.float().mean() - 0.5).pow(2)


def mask_entropy_loss(mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Seed 000 §III.C's mask entropy loss: the mean binary entropy −m log m − (1 − m)
    log(1 − m) of m (B, 1, H, W) in [0, 1] (natural log, ≤ log 2), pushing each pixel to 0 or
    1."""
    m = mask.float().clamp(eps, 1 - eps)
    return -(m * m.log() + (1 - m) * (1 - m).log()).mean()


def mask_prior_loss(mask: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Seed 000 §III.C's mask loss "based on the average facial region of the dataset": the
    mean squared difference between m (B, 1, H, W) and the average face mask ``prior``
    (1, 1, H, W) in [0, 1] (the formula is the project's)."""
    return (mask.float() - prior.float()).pow(2).mean()


def logistic_d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """The discriminator side of the GAN loss of MAttFace eq. 13 (Goodfellow et al.):
    −log D(x) − log(1 − D(x̃)) = softplus(−l_real) + softplus(l_fake) on logits, averaged over
    patches and summed over scales."""
    return sum(
        F.softplus(-r.float()).mean() + F.softplus(f.float()).mean()
        for r, f in zip(real, fake, strict=True)
    )


def logistic_g_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """The generator side of MAttFace eq. 13, non-saturating (−log D(x̃) = softplus(−l)), as
    GAN generators are trained in practice; summed over scales."""
    return sum(F.softplus(-f.float()).mean() for f in fake)


def pair_mse(swap: torch.Tensor, target: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pairs where ``use`` (B,) bool is set (0 when none is):
    the L2 reconstruction of same-identity pairs (RAFSwap release ``calc_loss``; MAttFace
    eq. 14). swap, target (B, C, H, W) float."""
    per_pair = (swap.float() - target.float()).pow(2).flatten(1).mean(1)
    w = use.to(per_pair)
    return (per_pair * w).sum() / w.sum().clamp(min=1.0)
