"""GHOST (Groshev et al. 2022, seed 001 §III) as released (ai-forever/ghost ``train.py``,
``network/AEI_Net.py``, ``network/AADLayer.py``, ``utils/training/losses.py``):

* AEI-Net with ``aad_units`` per AAD ResBlk (release ``--num_blocks 2``), instance-normalised
  AAD layers, bias-free ResBlk convs and the release's ``weight_init``;
* the discriminator of ``train.py``: pix2pixHD's multi-scale PatchGAN with 5 layers, instance
  norm and padding 2 on 3 scales;
* FaceShifter's terms with weights adv 1, attr 10, id 20, rec 10; reconstruction on
  same-person pairs; the adversarial term over all pairs (``train.py`` sets its
  different-person weights to ones);
* the eye loss off (``--weight_eyes 0``, ``--eye_detector_loss False``); when enabled, this
  project compares Gaussian heatmaps at the two eye centres of PFLD-68 (the release compares
  pupil heatmaps of an AdaptiveWing detector, whose weights are not available here).

* Adam with lr 4e-4, β (0, 0.999) and weight decay 1e-4 for G and D (``train.py``).

Not reproduced: ``Dmain`` is the project's hinge loss on real targets (the release takes the
sources as real and halves the sum over scales).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from infra.config import StrictConfig
from infra.frozen import FrozenOnnxModule
from infra.models import check_model_name
from training.losses import eye_heatmap_loss, hinge_g_real_loss, reconstruction_loss
from training.networks.discriminator import DiscriminatorConfig
from training.swappers.base import (
    BuildContext,
    DataRecipeConfig,
    OptimizerConfig,
    PhaseResult,
    SwapperConfig,
    refuse,
)
from training.swappers.faceshifter import DEBUG_AEI, AEINetArchConfig, FaceShifterObjective

if TYPE_CHECKING:
    from infra.models import ModelStore
    from training.data import PairBatch

#: 68-point indices of each eye's contour (iBUG 300-W: 36–41 and 42–47).
EYES = (list(range(36, 42)), list(range(42, 48)))


class EyeLandmarks(FrozenOnnxModule):
    """Frozen, differentiable eye landmarks (PFLD 68, converted from ONNX with onnx2torch).

    Input: (B, 3, S, S) RGB in [-1, 1], ArcFace-aligned face crops (any S; resized to the
    model's 112; on such crops PFLD's eye centres fall within 6 % of the inter-ocular
    distance of the detector's). Output: (B, 2, 2) the two eye centres (means of points
    36–41 and 42–47) in [0, 1] crop coordinates. Raises :class:`infra.models.ModelError` when
    the weights are missing.
    """

    def __init__(self, store: ModelStore, name: str = "pfld_68"):
        super().__init__(store, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        points = self.net(self.prepare(x)).reshape(x.shape[0], -1, 2)
        return torch.stack([points[:, eye].mean(1) for eye in EYES], dim=1)


#: GHOST's generator settings (release `AADLayer`, `AAD_ResBlk`, `weight_init`).
_GHOST_G = {"aad_norm": "instance", "conv_bias": False, "init": "xavier"}
#: The release's discriminator: 5 layers, instance norm, padding 2, 3 scales.
PAPER_GHOST = AEINetArchConfig(
    **_GHOST_G,
    discriminator=DiscriminatorConfig(num_layers=5, norm="instance", padding=2, num_scales=3),
)
#: Debug width: as DEBUG_AEI with GHOST's layer types (3-layer D: 64-px crops).
DEBUG_GHOST = DEBUG_AEI.model_copy(
    update={
        **_GHOST_G,
        "discriminator": DEBUG_AEI.discriminator.model_copy(update={"padding": 2}),
    }
)


class GhostWeightsConfig(StrictConfig):
    """GHOST loss weights (release ``train.py``: adv 1, attr 10, id 20, rec 10, eyes 0)."""

    adv: float = Field(1.0, ge=0, description="Hinge adversarial term, over all pairs.")
    id: float = Field(20.0, ge=0, description="1 − cos identity term.")
    att: float = Field(10.0, ge=0, description="Attribute L2 term.")
    rec: float = Field(10.0, ge=0, description="Reconstruction on same-person pairs.")
    eye: float = Field(
        0.0,
        ge=0,
        description="L2 between eye-centre heatmaps of X_t and Ŷ; 0 = off, as released "
        "(set e.g. 2 to enable).",
    )


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
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(weight_decay=1e-4),
        description="Adam lr 4e-4, β (0, 0.999), weight decay 1e-4 for G and D (release "
        "train.py: opt_G, opt_D with --lr_G/--lr_D 4e-4).",
    )
    landmark_model: str = Field("pfld_68", description="Registry name of the eye-landmark net.")

    @field_validator("landmark_model")
    @classmethod
    def _registered(cls, name: str) -> str:
        return check_model_name(name, "landmarks")

    heatmap_sigma: float = Field(1.5, gt=0, description="Eye heatmap Gaussian σ, heatmap px.")
    heatmap_size: int = Field(64, ge=8, description="Eye heatmap side, px.")
    debug: AEINetArchConfig = Field(default_factory=lambda: DEBUG_GHOST.model_copy())
    paper: AEINetArchConfig = Field(default_factory=lambda: PAPER_GHOST.model_copy())

    def check_recipe(self) -> None:
        refuse(
            self.weights.rec > 0 and not self.data.has_intra,
            "the reconstruction loss (weights.rec > 0) needs same-person pairs; "
            "data.same_ratio=0 with pairing=mixed never draws one (raise same_ratio or set "
            "weights.rec=0)",
        )


class GhostObjective(FaceShifterObjective):
    """GHOST as released: L = λ_adv L_adv + λ_id L_id + λ_att L_att + λ_rec L_rec(same-person
    pairs) + λ_eye ‖H(eyes(Ŷ)) − H(eyes(X_t))‖², L_adv = Σ_scales E[max(0, 1 − D(Ŷ))] over
    all pairs (release ``compute_generator_losses`` with ``diff_person`` all ones)."""

    G_STATS: ClassVar[tuple[str, ...]] = (*FaceShifterObjective.G_STATS, "Loss/G/eye")

    def __init__(
        self,
        id_encoder: nn.Module,
        eye_net: nn.Module | None,
        weights: GhostWeightsConfig,
        heatmap_size: int,
        heatmap_sigma: float,
    ):
        super().__init__(id_encoder, weights)
        self.eye_net, self.size, self.sigma = eye_net, heatmap_size, heatmap_sigma
        if eye_net is None:  # eye loss off: the landmark network is neither loaded nor run
            self.G_STATS = FaceShifterObjective.G_STATS

    @classmethod
    def build(cls, section: GhostConfig, ctx: BuildContext):
        on = section.weights.eye > 0
        eyes = EyeLandmarks(ctx.store, section.landmark_model) if on else None
        return cls(
            ctx.id_encoder, eyes, section.weights, section.heatmap_size, section.heatmap_sigma
        )

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        swap, fake, idl, att = self.aei_terms(g_engine, d_module, b)
        adv = hinge_g_real_loss(fake)
        rec = reconstruction_loss(swap.float(), b.target.float(), b.same_identity)
        w = self.w
        total = w.adv * adv + w.id * idl + w.att * att + w.rec * rec
        terms = [total, adv, idl, att, rec]
        if self.eye_net is not None:
            eye = eye_heatmap_loss(
                self.eye_net(swap.float()), self.eye_net(b.target.float()), self.size, self.sigma
            )
            total = total + w.eye * eye
            terms = [total, adv, idl, att, rec, eye]
        return PhaseResult(total, dict(zip(self.G_STATS, terms, strict=True))), swap.detach()
