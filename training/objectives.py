"""The training objectives of the three swappers; each owns its forward passes.

An objective returns the loss of a phase (and its named statistics); the training loop
checks it is finite, then calls ``engine.backward`` and ``engine.step``. In the generator
phase the discriminator is frozen by the loop and called through ``d_engine.module``.

* :class:`FaceShifterObjective` — FaceShifter eq. 4.8–4.12 (thesis §4.2.5).
* :class:`GhostObjective` — GHOST (seed 001 §III.B): FaceShifter's terms with
  reconstruction on same-person pairs, adversarial terms on different-person pairs and an
  eye-landmark heatmap loss.
* :class:`SimSwapObjective` — SimSwap, Facke eq. 2–8 (seed 002 §2.1.3): identity, L1
  reconstruction on intra-ID pairs, hinge adversarial, gradient penalty, weak feature
  matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import AEINetWeights, GhostWeights, SimSwapWeights
from training.data import PairBatch
from training.losses import (
    attribute_loss,
    eye_heatmap_loss,
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    hinge_g_real_loss,
    identity_loss,
    masked_l1,
    reconstruction_loss,
    weak_feature_matching,
)
from training.networks.discriminator import logits


@dataclass
class PhaseResult:
    """Loss of one phase (scalar tensor with graph) and its statistics by name."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _d_hinge(
    d_engine, real: torch.Tensor, fake: torch.Tensor, prefix: str = "Loss/D"
) -> PhaseResult:
    both = d_engine(torch.cat([real, fake]).to(_dtype(d_engine.module)))
    n = real.shape[0]
    scores = logits(both)
    loss = hinge_d_loss([s[:n].float() for s in scores], [s[n:].float() for s in scores])
    return PhaseResult(
        loss,
        {
            f"{prefix}/total": loss,
            "Scores/D/real": torch.stack([s[:n].float().mean() for s in scores]).mean(),
            "Scores/D/fake": torch.stack([s[n:].float().mean() for s in scores]).mean(),
        },
    )


class FaceShifterObjective:
    """FaceShifter AEI-Net: L = L_adv + λ_id L_id + λ_att L_att + λ_rec L_rec (eq. 4.12),
    reconstruction when X_s = X_t (eq. 4.11)."""

    def __init__(self, id_encoder: nn.Module, weights: AEINetWeights):
        self.id_encoder, self.w = id_encoder, weights

    def _aei_terms(self, g_engine, d_module, b: PairBatch):
        """Swap X_t with z_id(X_s); returns (swap, D logits of the swap, L_id, L_att)."""
        dtype = _dtype(g_engine.module)
        swap, att_t = g_engine(b.target.to(dtype), b.z_id.to(dtype))
        att_swap = g_engine.module.attributes(swap)
        fake = [o.float() for o in logits(d_module(swap.to(_dtype(d_module))))]
        idl = identity_loss(self.id_encoder(swap.float()), b.z_id.float())
        att = attribute_loss([a.float() for a in att_swap], [a.detach().float() for a in att_t])
        return swap, fake, idl, att

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        swap, fake, idl, att = self._aei_terms(g_engine, d_module, b)
        adv = hinge_g_loss(fake)
        rec = reconstruction_loss(swap.float(), b.target.float(), b.same_image)
        total = self.w.adv * adv + self.w.id * idl + self.w.att * att + self.w.rec * rec
        stats = {
            "Loss/G/total": total,
            "Loss/G/adv": adv,
            "Loss/G/id": idl,
            "Loss/G/att": att,
            "Loss/G/rec": rec,
        }
        return PhaseResult(total, stats), swap.detach()

    def discriminator_loss(self, d_engine, b: PairBatch, swap: torch.Tensor) -> PhaseResult:
        return _d_hinge(d_engine, b.target, swap)

    def d_regularization_loss(self, d_engine, b: PairBatch, swap: torch.Tensor, interval: int):
        return None


class GhostObjective(FaceShifterObjective):
    """GHOST: adversarial terms weighted to different-person pairs (release
    ``compute_generator_losses``), reconstruction on same-person pairs, and
    λ_eye ‖H(eyes(Ŷ)) − H(eyes(X_t))‖² on Gaussian heatmaps of the eye landmarks."""

    def __init__(
        self,
        id_encoder: nn.Module,
        eye_net: nn.Module,
        weights: GhostWeights,
        heatmap_size: int,
        heatmap_sigma: float,
    ):
        super().__init__(id_encoder, weights)
        self.eye_net, self.size, self.sigma = eye_net, heatmap_size, heatmap_sigma

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        swap, fake, idl, att = self._aei_terms(g_engine, d_module, b)
        adv = hinge_g_real_loss(fake, ~b.same_identity)
        rec = reconstruction_loss(swap.float(), b.target.float(), b.same_identity)
        eye = eye_heatmap_loss(
            self.eye_net(swap.float()), self.eye_net(b.target.float()), self.size, self.sigma
        )
        w = self.w
        total = w.adv * adv + w.id * idl + w.att * att + w.rec * rec + w.eye * eye
        stats = {
            "Loss/G/total": total,
            "Loss/G/adv": adv,
            "Loss/G/id": idl,
            "Loss/G/att": att,
            "Loss/G/rec": rec,
            "Loss/G/eye": eye,
        }
        return PhaseResult(total, stats), swap.detach()


class SimSwapObjective:
    """SimSwap: L = λ_Id L_Id + λ_Recon L_Recon + L_Adv + λ_GP L_GP + λ_wFM L_wFM (eq. 2);
    L_Recon only on intra-ID pairs; L_GP in the lazy Dreg phase (× its interval)."""

    def __init__(self, id_encoder: nn.Module, weights: SimSwapWeights):
        self.id_encoder, self.w = id_encoder, weights

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = _dtype(g_engine.module)
        swap, _ = g_engine(b.target.to(dtype), b.z_id.to(dtype))
        d_dtype = _dtype(d_module)
        feats_fake = d_module(swap.to(d_dtype))
        with torch.no_grad():
            feats_real = d_module(b.target.to(d_dtype))
        adv = hinge_g_loss([o.float() for o in logits(feats_fake)])
        idl = identity_loss(self.id_encoder(swap.float()), b.z_id.float())
        rec = masked_l1(swap.float(), b.target.float(), b.same_identity)
        wfm = weak_feature_matching(
            [[f.float() for f in s] for s in feats_fake],
            [[f.float() for f in s] for s in feats_real],
            self.w.wfm_from_layer,
        )
        total = adv + self.w.id * idl + self.w.rec * rec + self.w.wfm * wfm
        stats = {
            "Loss/G/total": total,
            "Loss/G/adv": adv,
            "Loss/G/id": idl,
            "Loss/G/rec": rec,
            "Loss/G/wfm": wfm,
        }
        return PhaseResult(total, stats), swap.detach()

    def discriminator_loss(self, d_engine, b: PairBatch, swap: torch.Tensor) -> PhaseResult:
        return _d_hinge(d_engine, b.target, swap)

    def d_regularization_loss(self, d_engine, b: PairBatch, swap: torch.Tensor, interval: int):
        if self.w.gp == 0:
            return None
        dtype = _dtype(d_engine.module)
        # Through the plain module: the engine's forward hooks refuse the inner
        # autograd.grad; the loop then calls d_engine.backward on the penalty.
        d = d_engine.module
        gp = gradient_penalty(lambda x: logits(d(x)), b.target.to(dtype), swap.to(dtype))
        loss = self.w.gp * interval * gp
        return PhaseResult(loss, {"Loss/D/gp": gp})
