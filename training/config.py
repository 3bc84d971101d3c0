"""Typed config of the ``train`` stage; mirrors ``params.yaml: train``.

One section per swapper (``aei_net``, ``ghost``, ``simswap``) holds its loss weights and two
architectures, ``debug`` (minutes on a CPU) and ``paper`` (the published widths);
``train.width`` picks one. Data pairing, the two DeepSpeed engines, phases, EMA,
checkpointing and NaN handling are shared.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiscriminatorArch(_Section):
    """Multi-scale PatchGAN (pix2pixHD: 64 / 512 / 3 layers / 3 scales)."""

    base_channels: int = Field(64, ge=1, description="Channels of the first conv.")
    max_channels: int = Field(512, ge=1, description="Cap on channels per layer.")
    num_layers: int = Field(3, ge=1, description="Stride-2 convs per scale.")
    num_scales: int = Field(3, ge=1, description="Image scales (SimSwap: 2 discriminators).")


class AEIArch(_Section):
    """AEI-Net widths (FaceShifter paper: 256 px, 32 → 1024 channels, 2 AAD units)."""

    image_size: int = Field(256, description="Training resolution (power of two ≥ 16), px.")
    base_channels: int = Field(32, ge=1, description="First attribute-encoder level channels.")
    max_channels: int = Field(1024, ge=1, description="Cap on channels per level.")
    aad_units: int = Field(2, ge=1, description="AAD → ReLU → conv units per AAD ResBlk.")
    discriminator: DiscriminatorArch = DiscriminatorArch()


class SimSwapArch(_Section):
    """SimSwap generator widths (paper, 224/256 px: 64 → 512 channels, 3 downsamplings,
    9 ID blocks)."""

    image_size: int = Field(256, description="Training resolution, px (divisible by 2^num_down).")
    base_channels: int = Field(64, ge=1, description="Channels after the 7x7 stem.")
    max_channels: int = Field(512, ge=1, description="Channels of the ID-injection bottleneck.")
    num_down: int = Field(3, ge=1, description="Stride-2 downsamplings (SimSwap-512: 4).")
    id_blocks: int = Field(9, ge=1, description="ID blocks (AdaIN residual blocks).")
    discriminator: DiscriminatorArch = DiscriminatorArch(num_scales=2)


#: Debug widths shared by AEI-Net and GHOST: 64 px, 8 → 64 channels, a 2-scale D.
DEBUG_D = DiscriminatorArch(base_channels=16, max_channels=64, num_scales=2)
DEBUG_AEI = AEIArch(image_size=64, base_channels=8, max_channels=64, discriminator=DEBUG_D)


class AEINetWeights(_Section):
    """FaceShifter eq. 4.12 (thesis: λ_att = λ_rec = 10, λ_id = 5)."""

    adv: float = Field(1.0, ge=0, description="λ_adv, hinge adversarial term (eq. 4.8).")
    id: float = Field(5.0, ge=0, description="λ_id, 1 − cos identity term (eq. 4.9).")
    att: float = Field(10.0, ge=0, description="λ_att, attribute L2 term (eq. 4.10).")
    rec: float = Field(10.0, ge=0, description="λ_rec, reconstruction when X_s = X_t (eq. 4.11).")


class GhostWeights(_Section):
    """GHOST (seed 001 §III.B; release ``train.py``: adv 1, attr 10, id 20, rec 10)."""

    adv: float = Field(1.0, ge=0, description="Hinge adversarial term, inter-identity pairs.")
    id: float = Field(20.0, ge=0, description="1 − cos identity term.")
    att: float = Field(10.0, ge=0, description="Attribute L2 term.")
    rec: float = Field(10.0, ge=0, description="Reconstruction on same-person pairs.")
    eye: float = Field(2.0, ge=0, description="L2 between eye-landmark heatmaps of X_t and Ŷ.")


class SimSwapWeights(_Section):
    """SimSwap loss, Facke eq. 2 (seed 002 §2.1.3)."""

    id: float = Field(30.0, ge=0, description="λ_Id, eq. 3.")
    rec: float = Field(10.0, ge=0, description="λ_Recon, L1 on intra-ID batches, eq. 4.")
    gp: float = Field(1e-5, ge=0, description="λ_GP, gradient penalty, eq. 7.")
    wfm: float = Field(10.0, ge=0, description="λ_wFM, weak feature matching, eq. 8.")
    wfm_from_layer: int = Field(
        -3, description="First discriminator layer of eq. 8 (negative: from the end)."
    )


class AEINetSection(_Section):
    weights: AEINetWeights = AEINetWeights()
    debug: AEIArch = DEBUG_AEI
    paper: AEIArch = AEIArch()


class GhostSection(_Section):
    weights: GhostWeights = GhostWeights()
    landmark_model: str = Field("pfld_68", description="Registry name of the eye-landmark net.")
    heatmap_sigma: float = Field(1.5, gt=0, description="Eye heatmap Gaussian σ, heatmap px.")
    heatmap_size: int = Field(64, ge=8, description="Eye heatmap side, px.")
    debug: AEIArch = DEBUG_AEI
    paper: AEIArch = AEIArch()


class SimSwapSection(_Section):
    weights: SimSwapWeights = SimSwapWeights()
    debug: SimSwapArch = SimSwapArch(
        image_size=64,
        base_channels=16,
        max_channels=64,
        num_down=3,
        id_blocks=2,
        discriminator=DEBUG_D,
    )
    paper: SimSwapArch = SimSwapArch()


class DataConfig(_Section):
    """Streaming and pairing.

    ``pairing``:
      * ``mixed`` — each pair is intra-identity with probability ``same_ratio``
        (FaceShifter thesis 0.2, GHOST 0.2, MAttFace 0.5);
      * ``alternate`` — SimSwap: intra-ID and inter-ID batches alternate.
    ``intra``: an intra-identity pair uses the same image (FaceShifter, original SimSwap) or
    two different images of the identity (GHOST; Identity Grouping, Facke §2.1.4, which
    samples b identities per intra-ID batch).
    """

    pairing: Literal["mixed", "alternate"] = "mixed"
    same_ratio: float = Field(0.2, ge=0, le=1, description="Intra-identity share (mixed).")
    intra: Literal["same_image", "same_identity"] = "same_image"
    buffer: int = Field(256, ge=8, description="Samples held per worker to draw pairs from.")
    interleave: int = Field(4, ge=1, description="Shards read at once per worker (identity mix).")
    steps_per_epoch: int = Field(500, ge=1, description="Steps per epoch (shards are resampled).")
    num_workers: int = Field(1, ge=0, description="DataLoader workers per process.")


class EngineSection(_Section):
    """One DeepSpeed engine."""

    zero_stage: Literal[0, 1, 2] = Field(
        0, description="ZeRO stage (3 cannot take the GAN's several backward passes per step)."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Engine precision.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    grad_clip: float = Field(0.0, ge=0, description="Gradient norm clip; 0 = off.")
    lr: float = Field(4e-4, gt=0, description="Adam learning rate.")
    betas: tuple[float, float] = Field((0.0, 0.999), description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")


class PhasesConfig(_Section):
    """Explicit GAN phases per step: Gmain, Dmain, and Dreg every ``d_reg_every`` steps."""

    d_reg_every: int = Field(
        4, ge=1, description="Steps between Dreg phases (lazy, loss × interval)."
    )


class EMAConfig(_Section):
    enabled: bool = True
    half_life_steps: float = Field(
        100.0, gt=0, description="Steps for an old weight's share to halve (β = 0.5^(1/h))."
    )


class CheckpointConfig(_Section):
    every: int = Field(0, ge=0, description="Steps between checkpoints; 0 = only at the end.")
    keep: int = Field(2, ge=1, description="Checkpoints kept.")
    resume: Literal["auto", "never"] = Field(
        "auto", description="`auto`: continue from the latest checkpoint in the output folder."
    )


class TrainConfig(_Section):
    """The ``train`` stage: a face swapper on the prepared shards with DeepSpeed."""

    model: Literal["aei_net", "ghost", "simswap"] = Field("aei_net", description="Swapper.")
    width: Literal["debug", "paper"] = Field(
        "debug", description="Architecture of the model section."
    )
    seed: int = Field(0, description="Seed of weights, data order and pair sampling.")
    steps: int = Field(1000, ge=1, description="Optimizer steps (G and D) to reach.")
    batch_size: int = Field(8, ge=2, description="Pairs per step per process.")
    data: DataConfig = DataConfig()
    aei_net: AEINetSection = AEINetSection()
    ghost: GhostSection = GhostSection()
    simswap: SimSwapSection = SimSwapSection()
    generator: EngineSection = EngineSection()
    discriminator: EngineSection = EngineSection()
    phases: PhasesConfig = PhasesConfig()
    ema: EMAConfig = EMAConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    max_bad_steps: int = Field(
        5, ge=1, description="Consecutive steps with a NaN/inf loss that stop the run."
    )
    log_every: int = Field(10, ge=1, description="Steps between metric logs.")
    sample_every: int = Field(100, ge=1, description="Steps between sample grids.")
    experiment: str = Field("faceswap", description="MLflow experiment name.")

    @property
    def arch(self) -> AEIArch | SimSwapArch:
        """The chosen model's architecture for the chosen width."""
        return getattr(getattr(self, self.model), self.width)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        a, where = self.arch, f"{self.model}.{self.width}.image_size"
        if isinstance(a, AEIArch) and (a.image_size < 16 or a.image_size & (a.image_size - 1)):
            raise ValueError(f"{where} must be a power of two >= 16, got {a.image_size}")
        if isinstance(a, SimSwapArch) and a.image_size % 2**a.num_down:
            raise ValueError(f"{where} must be divisible by 2^num_down, got {a.image_size}")
        return self
