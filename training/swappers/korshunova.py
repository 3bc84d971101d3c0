"""Korshunova et al. 2017 "Fast Face-swap Using Convolutional Neural Networks" as seed 000
§II.A rebuilds it: a multi-scale CNN (:mod:`training.networks.korshunova`) trained for ONE
source identity, whose photographs in the shards are the style set; the target face is the
network's input. No discriminator.

L = λ_content L_content + λ_style L_style + λ_light L_light + λ_TV L_TV with the weights of
seed 000's final run, 1, 50, 100 and 10 (§III.B: "loss weights of 1, 50, 100, and 10 for
content loss, style loss, light loss, and total variation loss"):

* content — VGG-19 features of the output against the target's (the target's pose and
  expression); default layer relu4_2;
* style — patch-based (Li & Wand 2016) against the style images nearest the target in head
  pose (Korshunova et al.), layers relu3_1 and relu4_1, 3×3 patches
  (:class:`training.perceptual.PatchStyleBank`);
* light — seed 000's luminance consistency between output and target (Korshunova et al.
  use a trained lighting network instead; seed 000 §IV names the difference); the formula
  is the project's (:func:`training.perceptual.luminance_loss`);
* TV — total variation of the output.

The output is restricted to the face by the target's FaceMesh face-oval mask (seed 000
§II.A), so every loss sees ``m·G(x) + (1 − m)·x``. ``Loss/G/id`` reports 1 − cos between the
swap's identity embedding and the style identity's mean embedding: monitored, not optimised
(neither source has an identity loss). VGG-19 ImageNet weights come from the model registry
(``vgg19_imagenet``); without them the run stops before any work, naming the file and URL.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field
from torch import nn

from infra.config import StrictConfig
from infra.dataset_format import DatasetCard
from training.losses import identity_loss
from training.networks.korshunova import KorshunovaNetConfig
from training.perceptual import (
    NAMED_LAYERS,
    PatchStyleBank,
    VGGFeatures,
    content_loss,
    load_vgg19_features,
    luminance_loss,
    total_variation,
)
from training.swappers.base import (
    BuildContext,
    DataRecipeConfig,
    Objective,
    OptimizerConfig,
    PhaseResult,
    SwapperConfig,
    param_dtype,
)

if TYPE_CHECKING:
    from training.data import PairBatch

log = logging.getLogger(__name__)


class KorshunovaWeightsConfig(StrictConfig):
    """Loss weights of seed 000's final run (§III.B)."""

    content: float = Field(1.0, ge=0, description="λ_content, VGG-19 content loss.")
    style: float = Field(50.0, ge=0, description="λ_style, patch-based style loss.")
    light: float = Field(100.0, ge=0, description="λ_light, luminance consistency.")
    tv: float = Field(10.0, ge=0, description="λ_TV, total variation.")


class StyleLossConfig(StrictConfig):
    """The VGG-19 layers and the patch matching of the content and style losses."""

    content_layer: str = Field("relu4_2", description="VGG-19 layer of the content loss.")
    style_layers: list[str] = Field(
        default_factory=lambda: ["relu3_1", "relu4_1"], description="Layers of the style loss."
    )
    patch_size: int = Field(3, ge=1, description="Style patch side, feature pixels.")
    n_best: int = Field(16, ge=1, description="Pose-nearest style images per target.")
    stride: int = Field(1, ge=1, description="Stride of the style images' patches.")
    max_style_images: int = Field(
        256, ge=1, description="Style set cap: the identity's first images in shard order."
    )
    light_sigma: float = Field(
        1 / 16, gt=0, description="Luminance low-pass σ as a fraction of the crop side."
    )

    def layers_known(self) -> None:
        """ValueError naming an unknown VGG-19 layer."""
        for name in [self.content_layer, *self.style_layers]:
            if name not in NAMED_LAYERS:
                raise ValueError(f"unknown VGG-19 layer {name!r}; choose from {NAMED_LAYERS}")


class KorshunovaConfig(SwapperConfig):
    """``train.korshunova``: one network per source identity (``source_identity``; null =
    the training identity with the most images). Targets are drawn uniformly over the
    training images; the pairs' sources are not used. Adam lr 1e-3, β (0.9, 0.999): neither
    source gives the optimiser, the project's choice (the usual feed-forward style transfer
    setting)."""

    source_identity: str | None = Field(
        None, description="Identity whose training images form the style set; null = most images."
    )
    data: DataRecipeConfig = Field(
        default_factory=lambda: DataRecipeConfig(draw="images", pairing="mixed", same_ratio=0.0),
        description="Targets uniform over the training images.",
    )
    weights: KorshunovaWeightsConfig = Field(default_factory=KorshunovaWeightsConfig)
    style: StyleLossConfig = Field(default_factory=StyleLossConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.both(lr=1e-3, betas=(0.9, 0.999)),
        description="Adam of the network (the discriminator's is unused).",
    )
    debug: KorshunovaNetConfig = Field(
        default_factory=lambda: KorshunovaNetConfig(
            image_size=64, channels=8, blocks=1, combiner_channels=16
        )
    )
    paper: KorshunovaNetConfig = Field(default_factory=KorshunovaNetConfig)

    def check_recipe(self) -> None:
        self.style.layers_known()

    @property
    def annotations(self) -> tuple[str, ...]:
        return ("face_mask", "pose")


def choose_source_identity(card: DatasetCard, name: str | None) -> str:
    """``name`` when the training split holds it, else (None) the labelled training identity
    with the most images (ties: the first by name). ValueError naming the five largest
    otherwise."""
    counts = {k: v for k, v in card.splits["train"].identities.items() if k}
    largest = sorted(counts, key=lambda k: (-counts[k], k))
    if name is None and largest:
        return largest[0]
    if name in counts:
        return name
    top = ", ".join(f"{k} ({counts[k]})" for k in largest[:5])
    raise ValueError(f"source identity {name!r} is not in the training split; largest: {top}")


def read_style_set(ctx: BuildContext, identity: str, limit: int) -> dict[str, torch.Tensor]:
    """The training faces of ``identity`` (up to ``limit``, shard order) at the generator
    size: ``images`` (N, 3, S, S) float32 in [-1, 1], ``pose`` (N, 3) yaw, pitch, roll in
    degrees, ``embedding`` (N, D) float32. ValueError when none can be read."""
    from training.data import decode_sample

    faces = [
        decode_sample(raw, ctx.image_size, ("pose",))
        for raw in ctx.card.samples_of(ctx.data_dir, "train", identity, limit)
    ]
    if not faces:
        raise ValueError(f"no training sample of identity {identity!r} could be read")
    return {
        "images": torch.stack([f["image"] for f in faces]),
        "pose": torch.stack([f["pose"] for f in faces]),
        "embedding": torch.stack([f["embedding"] for f in faces]),
    }


class KorshunovaObjective(Objective):
    """Gmain of the per-identity multi-scale CNN: content, style, light and TV losses of the
    face-masked output (module docstring)."""

    G_STATS: ClassVar[tuple[str, ...]] = (
        "Loss/G/total",
        "Loss/G/content",
        "Loss/G/style",
        "Loss/G/light",
        "Loss/G/tv",
        "Loss/G/id",
    )

    def __init__(
        self,
        id_encoder: nn.Module,
        section: KorshunovaConfig,
        vgg: VGGFeatures,
        bank: PatchStyleBank,
        identity: str,
        identity_code: torch.Tensor,
    ):
        super().__init__(id_encoder, section.weights)
        self.style_cfg, self.vgg, self.bank = section.style, vgg, bank
        self.identity, self.identity_code = identity, identity_code

    @classmethod
    def build(cls, section: KorshunovaConfig, ctx: BuildContext) -> KorshunovaObjective:
        s = section.style
        last = max([s.content_layer, *s.style_layers], key=NAMED_LAYERS.index)
        vgg = load_vgg19_features(ctx.store, last)  # first: a missing file stops the run here
        identity = choose_source_identity(ctx.card, section.source_identity)
        style = read_style_set(ctx, identity, s.max_style_images)
        log.info("korshunova: source identity %s, %d style images", identity, len(style["pose"]))
        bank = PatchStyleBank(
            vgg, style["images"], style["pose"], s.style_layers, s.patch_size, s.n_best, s.stride
        )
        code = nn.functional.normalize(style["embedding"].mean(0, keepdim=True), dim=1)
        return cls(ctx.id_encoder, section, vgg, bank, identity, code)

    def export_meta(self) -> dict:
        return {"source_identity": self.identity}

    def generator_loss(self, g_engine, d_module, b: PairBatch) -> tuple[PhaseResult, torch.Tensor]:
        dtype = param_dtype(g_engine.module)
        mask, pose = b.annotations["face_mask"], b.annotations["pose"]
        out, _ = g_engine(b.target.to(dtype), b.z_id.to(dtype), mask.to(dtype))
        out, target, w, s = out.float(), b.target.float(), self.w, self.style_cfg
        f_out = self.vgg(out)
        with torch.no_grad():
            f_target = self.vgg(target)[s.content_layer]
            idl = identity_loss(self.id_encoder(out), self.identity_code.expand(len(out), -1))
        content = content_loss(f_out[s.content_layer], f_target)
        style = self.bank.loss(f_out, pose)
        light = luminance_loss(out, target, mask, s.light_sigma)
        tv = total_variation(out)
        total = w.content * content + w.style * style + w.light * light + w.tv * tv
        stats = dict(zip(self.G_STATS, (total, content, style, light, tv, idl), strict=True))
        return PhaseResult(total, stats), out.detach()
