"""GHOST (Groshev et al. 2022, seed 001 §III.B): AEI-Net with ``aad_units`` per AAD ResBlk,
FaceShifter's terms with reconstruction on same-person pairs, adversarial terms on
different-person pairs (release ``compute_generator_losses``) and an eye loss on Gaussian
heatmaps of eye landmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from infra.config import StrictConfig
from infra.frozen import FrozenOnnxModule
from infra.models import check_model_name
from training.losses import eye_heatmap_loss, hinge_g_real_loss, reconstruction_loss
from training.swappers.base import DataRecipeConfig, PhaseResult, SwapperConfig, refuse
from training.swappers.faceshifter import DEBUG_AEI, AEINetArchConfig, FaceShifterObjective

if TYPE_CHECKING:
    from infra.models import ModelStore
    from training.data import PairBatch

#: 68-point indices of the two eyes (iBUG 300-W: 36–41 and 42–47).
EYE_POINTS = list(range(36, 48))


class EyeLandmarks(FrozenOnnxModule):
    """Frozen, differentiable eye landmarks (PFLD 68, converted from ONNX with onnx2torch).

    Input: (B, 3, S, S) RGB in [-1, 1], ArcFace-aligned face crops (any S; resized to the
    model's 112; on such crops PFLD's eye centres fall within 6 % of the inter-ocular
    distance of the detector's). Output: (B, 12, 2) eye landmarks (points 36–47) in [0, 1]
    crop coordinates. Raises :class:`infra.models.ModelError` when the weights are missing.
    """

    def __init__(self, store: ModelStore, name: str = "pfld_68"):
        super().__init__(store, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x)).reshape(x.shape[0], -1, 2)[:, EYE_POINTS]


class GhostWeightsConfig(StrictConfig):
    """GHOST loss weights (release ``train.py``: adv 1, attr 10, id 20, rec 10)."""

    adv: float = Field(1.0, ge=0, description="Hinge adversarial term, inter-identity pairs.")
    id: float = Field(20.0, ge=0, description="1 − cos identity term.")
    att: float = Field(10.0, ge=0, description="Attribute L2 term.")
    rec: float = Field(10.0, ge=0, description="Reconstruction on same-person pairs.")
    eye: float = Field(2.0, ge=0, description="L2 between eye-landmark heatmaps of X_t and Ŷ.")


class GhostConfig(SwapperConfig):
    """``train.ghost``. Data: 20 % same-person pairs (release ``--same_person 0.2``), two
    different images of the person (release ``--same_identity``)."""

    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(
            pairing="mixed", same_ratio=0.2, intra="same_identity"
        ),
        description="How training pairs are drawn.",
    )
    weights: GhostWeightsConfig = Field(default_factory=GhostWeightsConfig)
    landmark_model: str = Field("pfld_68", description="Registry name of the eye-landmark net.")

    @field_validator("landmark_model")
    @classmethod
    def _registered(cls, name: str) -> str:
        return check_model_name(name, "landmarks")

    heatmap_sigma: float = Field(1.5, gt=0, description="Eye heatmap Gaussian σ, heatmap px.")
    heatmap_size: int = Field(64, ge=8, description="Eye heatmap side, px.")
    debug: AEINetArchConfig = Field(default_factory=lambda: DEBUG_AEI.model_copy())
    paper: AEINetArchConfig = Field(default_factory=AEINetArchConfig)

    def check_recipe(self) -> None:
        d, w = self.data, self.weights
        refuse(
            w.rec > 0 and not d.has_intra,
            "the reconstruction loss (weights.rec > 0) needs same-person pairs; "
            "data.same_ratio=0 with pairing=mixed never draws one (raise same_ratio or set "
            "weights.rec=0)",
        )
        refuse(
            w.adv > 0 and not d.has_inter,
            "the adversarial loss (weights.adv > 0) fires on different-person "
            "pairs only; data.same_ratio=1 never draws one (lower same_ratio or set "
            "weights.adv=0)",
        )


class GhostObjective(FaceShifterObjective):
    """GHOST: L = λ_adv L_adv(different-person pairs) + λ_id L_id + λ_att L_att
    + λ_rec L_rec(same-person pairs) + λ_eye ‖H(eyes(Ŷ)) − H(eyes(X_t))‖²."""

    G_STATS: ClassVar[tuple[str, ...]] = (*FaceShifterObjective.G_STATS, "Loss/G/eye")

    def __init__(
        self,
        id_encoder: nn.Module,
        eye_net: nn.Module,
        weights: GhostWeightsConfig,
        heatmap_size: int,
        heatmap_sigma: float,
    ):
        super().__init__(id_encoder, weights)
        self.eye_net, self.size, self.sigma = eye_net, heatmap_size, heatmap_sigma

    @classmethod
    def build(cls, section: GhostConfig, id_encoder: nn.Module, store: ModelStore):
        eyes = EyeLandmarks(store, section.landmark_model)
        return cls(id_encoder, eyes, section.weights, section.heatmap_size, section.heatmap_sigma)

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        swap, fake, idl, att = self.aei_terms(g_engine, d_module, b)
        adv = hinge_g_real_loss(fake, ~b.same_identity)
        rec = reconstruction_loss(swap.float(), b.target.float(), b.same_identity)
        eye = eye_heatmap_loss(
            self.eye_net(swap.float()), self.eye_net(b.target.float()), self.size, self.sigma
        )
        w = self.w
        total = w.adv * adv + w.id * idl + w.att * att + w.rec * rec + w.eye * eye
        terms = (total, adv, idl, att, rec, eye)
        return PhaseResult(total, dict(zip(self.G_STATS, terms, strict=True))), swap.detach()
