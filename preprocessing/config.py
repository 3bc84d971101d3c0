"""Typed config of the ``prepare`` stage; mirrors ``params.yaml: prepare``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Section):
    """One input source."""

    name: str = Field(description="Source name written into every manifest row.")
    kind: Literal["identity_csv"] = Field(
        description="Reader: `identity_csv` = CSV with columns path,identity[,…]."
    )
    path: str = Field(description="CSV file, relative to paths.data_root unless absolute.")
    root: str | None = Field(
        None,
        description="Folder the CSV's image paths are relative to (default: the CSV's folder).",
    )


class DetectionConfig(_Section):
    """Face detection and the single-face rule."""

    model: str = Field("scrfd_2.5g_bnkps", description="Registry name of the SCRFD detector.")
    input_size: int = Field(640, ge=128, description="Detector input side in pixels (letterbox).")
    score_threshold: float = Field(0.5, gt=0, lt=1, description="Minimum detection score.")
    min_relative_size: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A further face counts as a second face when its box side is at least "
        "this fraction of the largest face's side (smaller background faces are ignored).",
    )
    pad_on_miss: float = Field(
        0.5,
        ge=0,
        description="When nothing is found, retry once with a black border of this fraction "
        "of the longer image side on every side (tight face crops need context). 0 = off.",
    )


class AlignConfig(_Section):
    """Alignment of the kept face."""

    template: Literal["arcface"] = Field(
        "arcface", description="5-point template; `arcface` = ArcFace 112 template scaled."
    )
    crop_size: int = Field(256, ge=64, description="Side of the aligned crop in pixels.")
    jpeg_quality: int = Field(95, ge=50, le=100, description="JPEG quality of stored crops.")


class SplitConfig(_Section):
    """Held-out evaluation identities."""

    eval_identities: int = Field(
        8,
        ge=0,
        description="Number of identities (with ≥ min_images kept) held out for evaluation.",
    )
    min_images: int = Field(2, ge=2, description="Kept images an evaluation identity needs.")
    seed: int = Field(0, description="Seed of the identity choice (hash-based, stable).")


class RayConfig(_Section):
    """Ray execution."""

    address: str | None = Field(
        None, description="Cluster address; null = RAY_ADDRESS or a local ray.init()."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance.")
    num_actors: int = Field(2, ge=1, description="Actors (model holders) per pool.")
    cpus_per_actor: float = Field(
        0.5, gt=0, description="CPUs each actor reserves; fractional on small machines."
    )
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each actor reserves.")
    batch_size: int = Field(16, ge=1, description="Images per detection batch.")
    threads_per_actor: int = Field(1, ge=1, description="onnxruntime intra-op threads per actor.")


class PrepareConfig(_Section):
    """The ``prepare`` stage: detect, filter, align, embed, write shards + manifest."""

    sources: list[SourceConfig] = Field(description="Inputs; several are read in one run.")
    identity_model: str = Field(
        "mobilefacenet_128d", description="Registry name of the identity embedder (ONNX)."
    )
    detection: DetectionConfig = DetectionConfig()
    align: AlignConfig = AlignConfig()
    split: SplitConfig = SplitConfig()
    shard_size: int = Field(64, ge=1, description="Samples per WebDataset shard.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images whose header claims more pixels are rejected."
    )
    ray: RayConfig = RayConfig()

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in v]
        if not names:
            raise ValueError("at least one source is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return v
