"""Typed config of the ``train`` stage; mirrors ``params.yaml: train``.

Each registered swapper (:data:`training.registry.SWAPPERS`) has its own section
``train.<name>`` holding its whole recipe: two architectures, ``debug`` (minutes on a CPU)
and ``paper`` (the published widths), its loss weights and its data recipe (pairing mode,
intra-identity ratio, intra-pair kind). ``train.model`` picks the swapper and
``train.width`` its architecture. Streaming, the two DeepSpeed engines, phases, EMA,
checkpointing and NaN handling are shared.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from infra.config import StrictConfig
from training.registry import SWAPPERS
from training.swappers.base import DataRecipeConfig, SwapperConfig


class DataConfig(StrictConfig):
    """How the shards are read (the pairing recipe is each swapper's ``data``)."""

    access: Literal["indexed", "stream"] = Field(
        "indexed",
        description="`indexed`: random access, pairs drawn over the whole split; `stream`: "
        "sequential reads (storage without random access), pairs drawn from a buffer.",
    )
    buffer: int = Field(256, ge=8, description="stream: samples held per worker for pairing.")
    interleave: int = Field(4, ge=1, description="stream: shards read at once per worker.")
    steps_per_epoch: int = Field(500, ge=1, description="Steps per epoch (units re-drawn).")
    num_workers: int = Field(1, ge=0, description="DataLoader workers per process.")


class EngineConfig(StrictConfig):
    """One DeepSpeed engine (``train.generator`` or ``train.discriminator``); its Adam is the
    swapper's (``train.<model>.optimizer``)."""

    zero_stage: Literal[0, 1, 2] = Field(
        0, description="ZeRO stage (3 cannot take the GAN's several backward passes per step)."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="DeepSpeed precision: `bf16`/`fp16` cast the weights themselves (fp32 "
        "master copies in the optimizer).",
    )
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    grad_clip: float = Field(0.0, ge=0, description="Gradient norm clip; 0 = off.")
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "contiguous",
        description="`channels_last`: the module's 4-D weights and the 4-D inputs of its "
        "forward passes in NHWC (faster convolutions on tensor cores and oneDNN).",
    )
    autocast: Literal["none", "bf16"] = Field(
        "none",
        description="`bf16`: the engine's forward passes in the phases run under "
        "torch.autocast(bf16) on the tensors' device; the weights stay fp32 (unlike "
        "`precision: bf16`) and outputs come back as fp32 for the losses.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the engine's module in place (DeepSpeed engine.compile(); "
        "state-dict keys unchanged). The first steps pay the compilation.",
    )

    @model_validator(mode="after")
    def _autocast_with_fp16(self) -> EngineConfig:
        if self.autocast == "bf16" and self.precision == "fp16":
            raise ValueError(
                "autocast: bf16 with precision: fp16 would run fp16 weights under a bf16 "
                "autocast; choose one: autocast: bf16 with precision: fp32 (fp32 weights, "
                "bf16 matmuls/convolutions) or precision: bf16/fp16 with autocast: none"
            )
        return self


class PhasesConfig(StrictConfig):
    """Explicit GAN phases per step: Gmain, Dmain, and Dreg every ``d_reg_every`` steps."""

    d_reg_every: int = Field(
        4, ge=1, description="Steps between Dreg phases (lazy, loss × interval)."
    )


class EMAConfig(StrictConfig):
    """Exponential moving average of the generator (evaluation uses it)."""

    enabled: bool = Field(True, description="Keep and export the EMA generator.")
    half_life_steps: float = Field(
        100.0, gt=0, description="Steps for an old weight's share to halve (β = 0.5^(1/h))."
    )
    bn_calibration_samples: int = Field(
        64,
        ge=0,
        description="Training faces run through the EMA generator to recompute its batch-norm "
        "statistics before sampling and export; 0 keeps the live weights' statistics.",
    )


class CheckpointConfig(StrictConfig):
    """Full-state checkpoints of both engines and the run."""

    every: int = Field(0, ge=0, description="Steps between checkpoints; 0 = only at the end.")
    keep: int = Field(2, ge=1, description="Checkpoints kept.")
    resume: Literal["auto", "never"] = Field(
        "auto", description="`auto`: continue from the latest checkpoint in the output folder."
    )


class RayTrainConfig(StrictConfig):
    """``fsp train`` as a Ray Train ``TorchTrainer`` (``workers`` > 0): Ray starts one
    training process per worker across the cluster's nodes and sets up their process group;
    each builds the two DeepSpeed engines as a ``torchrun`` process does."""

    workers: int = Field(
        0, ge=0, description="Ray Train workers (processes); 0 = not under Ray Train."
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per worker (fractions allowed).")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker; 0 = CPU (gloo).")
    max_failures: int = Field(
        3, ge=0, description="Restarts from the latest checkpoint after a worker failure."
    )


class TrainSettingsConfig(StrictConfig):
    """The settings of ``train`` every swapper shares (see :data:`TrainConfig`)."""

    model: str = Field("aei_net", description="Swapper: a name of the registry.")
    width: Literal["debug", "paper"] = Field(
        "debug", description="Architecture of the model section."
    )
    seed: int = Field(0, description="Seed of weights, data order and pair sampling.")
    steps: int = Field(1000, ge=1, description="Optimizer steps (G and D) to reach.")
    batch_size: int = Field(8, ge=2, description="Pairs per step per process.")
    data: DataConfig = Field(default_factory=DataConfig)
    generator: EngineConfig = Field(default_factory=EngineConfig)
    discriminator: EngineConfig = Field(default_factory=EngineConfig)
    phases: PhasesConfig = Field(default_factory=PhasesConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    ray: RayTrainConfig = Field(default_factory=RayTrainConfig)
    max_bad_steps: int = Field(
        5, ge=1, description="Consecutive steps with a NaN/inf loss that stop the run."
    )
    log_every: int = Field(10, ge=1, description="Steps between metric logs.")
    sample_every: int = Field(100, ge=1, description="Steps between sample grids.")

    @property
    def section(self) -> SwapperConfig:
        """The chosen swapper's section (``train.<model>``)."""
        return getattr(self, self.model)

    @property
    def arch(self) -> Any:
        """The chosen swapper's architecture at the chosen width."""
        return self.section.arch(self.width)

    @property
    def recipe(self) -> DataRecipeConfig:
        """The chosen swapper's data recipe."""
        return self.section.data

    @model_validator(mode="after")
    def _accumulation_with_dreg(self) -> TrainSettingsConfig:
        if self.discriminator.grad_accum > 1 and self.section.has_d_regularization:
            raise ValueError(
                f"discriminator.grad_accum={self.discriminator.grad_accum} with {self.model}'s "
                "lazy Dreg phase: Dmain and Dreg each count as a micro-step, so optimizer steps "
                "would not fall on step boundaries; set discriminator.grad_accum=1 (or the "
                "regulariser's weight to 0)"
            )
        return self

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in SWAPPERS:
            raise ValueError(
                f"{name!r} is not a registered swapper; choose one of {', '.join(SWAPPERS)}"
            )
        return name


#: The ``train`` stage: the shared settings plus one ``train.<name>`` section per row of
#: :data:`training.registry.SWAPPERS` (so a swapper's section exists once it is registered).
TrainConfig = create_model(
    "TrainConfig",
    __base__=TrainSettingsConfig,
    __doc__="The ``train`` stage: a face swapper on the prepared shards with DeepSpeed.",
    **{
        name: (row.config, Field(default_factory=row.config, description=row.title))
        for name, row in SWAPPERS.items()
    },
)
