"""FaceShifter AEI-Net training phases: the loss object owns forward and backward.

``Gmain``: swap, then L = λ_adv L_adv + λ_id L_id + λ_att L_att + λ_rec L_rec
(FaceShifter eq. 4.12) backpropagated into the generator engine, with the discriminator
frozen and called through ``d_engine.module`` (calling the engine itself would register a
second backward with it).
``Dmain``: hinge loss on real targets and detached swaps, backpropagated into the
discriminator engine.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import LossWeights
from training.data import Pairs
from training.engine import engine_dtype, set_requires_grad
from training.losses import (
    attribute_loss,
    hinge_d_loss,
    hinge_g_loss,
    identity_loss,
    reconstruction_loss,
)
from training.networks.discriminator import logits


class AEINetLoss:
    """Phases of AEI-Net training.

    Parameters
    ----------
    id_encoder : frozen differentiable identity encoder (built once by the caller).
    weights : λ values of eq. 4.12.
    """

    def __init__(self, id_encoder: nn.Module, weights: LossWeights):
        self.id_encoder = id_encoder
        self.w = weights

    def generator_phase(
        self, g_engine, d_engine, pairs: Pairs
    ) -> tuple[dict[str, float], torch.Tensor]:
        """Forward + backward of the generator objective; returns (stats, detached swap)."""
        dtype = engine_dtype(g_engine)
        target = pairs.target.to(dtype)
        set_requires_grad(d_engine.module, False)
        swap, att_target = g_engine(target, pairs.z_id.to(dtype))
        att_swap = g_engine.module.attributes(swap)
        l_adv = hinge_g_loss(logits(d_engine.module(swap.to(engine_dtype(d_engine)))))
        l_id = identity_loss(self.id_encoder(swap.float()), pairs.z_id.float())
        l_att = attribute_loss(att_swap, [a.detach() for a in att_target])
        l_rec = reconstruction_loss(swap.float(), pairs.target.float(), pairs.same)
        total = self.w.adv * l_adv + self.w.id * l_id + self.w.att * l_att + self.w.rec * l_rec
        g_engine.backward(total)
        set_requires_grad(d_engine.module, True)
        stats = {
            "Loss/G/total": total.item(),
            "Loss/G/adv": l_adv.item(),
            "Loss/G/id": l_id.item(),
            "Loss/G/att": l_att.item(),
            "Loss/G/rec": l_rec.item(),
        }
        return stats, swap.detach()

    def discriminator_phase(
        self, d_engine, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, float]:
        """Forward + backward of the hinge discriminator loss on one real/fake batch."""
        dtype = engine_dtype(d_engine)
        both = d_engine(torch.cat([real, fake]).to(dtype))
        n = real.shape[0]
        scores = logits(both)
        loss = hinge_d_loss([s[:n] for s in scores], [s[n:] for s in scores])
        d_engine.backward(loss)
        return {
            "Loss/D/total": loss.item(),
            "Scores/D/real": torch.stack([s[:n].mean() for s in scores]).mean().item(),
            "Scores/D/fake": torch.stack([s[n:].mean() for s in scores]).mean().item(),
        }
