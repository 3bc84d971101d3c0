"""Typed config of the ``train`` stage; mirrors ``params.yaml: train``."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorConfig(_Section):
    """AEI-Net widths (paper: 32 / 1024)."""

    base_channels: int = Field(32, ge=1, description="Channels of the first encoder level.")
    max_channels: int = Field(1024, ge=1, description="Cap on channels per level.")


class DiscriminatorSection(_Section):
    """Multi-scale PatchGAN (pix2pixHD: 64 / 512 / 3 layers / 3 scales)."""

    base_channels: int = Field(64, ge=1, description="Channels of the first conv.")
    max_channels: int = Field(512, ge=1, description="Cap on channels per layer.")
    num_layers: int = Field(3, ge=1, description="Stride-2 convs per scale.")
    num_scales: int = Field(3, ge=1, description="Image scales.")


class LossWeights(_Section):
    """FaceShifter eq. 4.12 weights (thesis: λ_att = λ_rec = 10, λ_id = 5)."""

    adv: float = Field(1.0, ge=0, description="λ_adv, hinge adversarial term.")
    id: float = Field(5.0, ge=0, description="λ_id, 1 − cos identity term.")
    att: float = Field(10.0, ge=0, description="λ_att, attribute L2 term.")
    rec: float = Field(10.0, ge=0, description="λ_rec, reconstruction term (source = target).")


class OptimConfig(_Section):
    """Adam for both networks."""

    lr_g: float = Field(4e-4, gt=0, description="Generator learning rate.")
    lr_d: float = Field(4e-4, gt=0, description="Discriminator learning rate.")
    betas: tuple[float, float] = Field((0.0, 0.999), description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")


class DeepSpeedSection(_Section):
    """Settings applied to both DeepSpeed engines (each gets its own config dict)."""

    zero_stage: Literal[0, 1, 2] = Field(
        0, description="ZeRO stage (3 cannot take two backward passes per step)."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Engine precision.")
    grad_clip: float = Field(0.0, ge=0, description="Gradient norm clip; 0 = off.")


class TrainConfig(_Section):
    """The ``train`` stage: FaceShifter AEI-Net on the prepared shards with DeepSpeed."""

    model: Literal["aei_net"] = Field("aei_net", description="Swapper architecture.")
    seed: int = Field(0, description="Seed of weights, data order and pair sampling.")
    steps: int = Field(300, ge=1, description="Optimizer steps (generator + discriminator).")
    batch_size: int = Field(8, ge=2, description="Pairs per step per process.")
    image_size: int = Field(
        64, description="Training resolution (power of two); crops from dataset.json are resized."
    )
    same_ratio: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Fraction of pairs whose source is the target image (thesis: 0.2).",
    )
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorSection = DiscriminatorSection()
    loss: LossWeights = LossWeights()
    optim: OptimConfig = OptimConfig()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    num_workers: int = Field(1, ge=0, description="DataLoader worker processes.")
    shuffle_buffer: int = Field(256, ge=1, description="WebDataset sample shuffle buffer.")
    log_every: int = Field(10, ge=1, description="Steps between metric logs.")
    sample_every: int = Field(100, ge=1, description="Steps between sample grids.")
    experiment: str = Field("faceswap", description="MLflow experiment name.")

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 16 or math.log2(v) != int(math.log2(v)):
            raise ValueError(f"image_size must be a power of two >= 16, got {v}")
        return v
