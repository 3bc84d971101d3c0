"""Typed config of the ``prepare`` stage; mirrors ``params.yaml: prepare``.

Class defaults follow the papers (seed 000 §III.A filter funnel, FaceShifter thesis §5.1
size limit); ``params.yaml`` holds the values used on the sample faces.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from infra.config import StrictConfig
from infra.models import check_model_name

#: Extensions read as images; an animated GIF, WebP or PNG is read as its first frame.
IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"]


class SourceConfig(StrictConfig):
    """One input source.

    Kinds: ``identity_csv`` (CSV with ``path,identity``), ``vggface2``
    (``<path>/<identity>/<image>``), ``celebahq`` (flat image folder, optional ground-truth
    masks and identity file), ``folder`` (any folder tree, no identities).
    """

    name: str = Field(description="Source name written into every manifest row.")
    kind: Literal["identity_csv", "vggface2", "celebahq", "folder"] = Field(description="Reader.")
    path: str = Field(description="CSV file or image folder, relative to paths.data_root.")
    root: str | None = Field(
        None, description="identity_csv: folder the listed paths are relative to (default: CSV's)."
    )
    masks: str | None = Field(
        None, description="celebahq: folder of 19-class label PNGs named like the images."
    )
    identities: str | None = Field(
        None, description="celebahq: text file of `<image file> <identity>` lines."
    )
    extensions: list[str] = Field(
        IMAGE_EXTENSIONS,
        description="Folder readers: extensions read as images; other files "
        "are listed and rejected as unsupported_extension.",
    )

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> SourceConfig:
        if self.root is not None and self.kind != "identity_csv":
            raise ValueError(f"source {self.name!r}: `root` only applies to identity_csv")
        if (self.masks or self.identities) and self.kind != "celebahq":
            raise ValueError(f"source {self.name!r}: `masks`/`identities` only apply to celebahq")
        return self


class DetectionConfig(StrictConfig):
    """Face detection and the single-face rule."""

    model: str = Field("scrfd_2.5g_bnkps", description="Registry name of the SCRFD detector.")

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        return check_model_name(name, "detection")

    input_size: int = Field(640, ge=128, description="Largest detector input side (letterbox), px.")
    adaptive_size: bool = Field(
        True,
        description="Detect small images at the smallest of 160/320/480/input_size that "
        "holds them instead of upscaling them to input_size.",
    )
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
    pose_margin: float = Field(0.2, ge=0, description="Face-box enlargement for FSA-Net head pose.")


class DuplicateEntriesConfig(StrictConfig):
    """Seed 000: VGGFace2 exports that split one photo into ``x_01``/``x_02``: keep a lone
    ``_01``, drop every member of a group with more than one."""

    enabled: bool = True
    pattern: str = Field(
        r"^(?P<stem>.+)_(?P<index>\d{2})$",
        description="Regex on the file stem; files with the same folder and `stem` group.",
    )


class NearDuplicatesConfig(StrictConfig):
    """Near-duplicate photos of one identity (perceptual hash): keep one."""

    enabled: bool = True
    max_distance: int = Field(
        6, ge=0, le=64, description="pHash Hamming distance (of 64 bits) counted as duplicate."
    )


class SizeFilterConfig(StrictConfig):
    """Face-box size, sqrt(box width × height) in pixels."""

    drop_fraction: float = Field(
        0.45,
        ge=0,
        lt=1,
        description="Drop this lower fraction by face size (seed 000: 45 %): a quantile over "
        "the faces still kept after the single-face step (every earlier step applied).",
    )
    min_face: float = Field(
        180.0, ge=0, description="Absolute minimum face size in pixels (FaceShifter thesis: 180)."
    )


class AspectFilterConfig(StrictConfig):
    """Image height/width ratio. Seed 000 keeps images with a ratio below 0.85 or above 1.15,
    as written (``keep: outside``)."""

    low: float = Field(0.85, gt=0, description="Lower edge of the band.")
    high: float = Field(1.15, gt=0, description="Upper edge of the band.")
    keep: Literal["outside", "inside", "all"] = Field(
        "outside", description="Keep images outside or inside the band, or all (filter off)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AspectFilterConfig:
        if self.low > self.high:
            raise ValueError(f"aspect band low {self.low} > high {self.high}")
        return self


class TiltFilterConfig(StrictConfig):
    """Head tilt: roll from the eye landmarks, yaw and pitch from FSA-Net. Degrees."""

    max_roll: float = Field(30.0, gt=0, description="Largest |roll| kept (eye landmarks).")
    max_yaw: float = Field(45.0, gt=0, description="Largest |yaw| kept (FSA-Net).")
    max_pitch: float = Field(30.0, gt=0, description="Largest |pitch| kept (FSA-Net).")


class FiltersConfig(StrictConfig):
    """The filter funnel, applied in this order and counted separately
    (:data:`preprocessing.filters.FUNNEL`)."""

    duplicate_entries: DuplicateEntriesConfig = DuplicateEntriesConfig()
    near_duplicates: NearDuplicatesConfig = NearDuplicatesConfig()
    size: SizeFilterConfig = SizeFilterConfig()
    aspect: AspectFilterConfig = AspectFilterConfig()
    tilt: TiltFilterConfig = TiltFilterConfig()


class CropConfig(StrictConfig):
    """One aligned crop written per face."""

    template: Literal["arcface", "ffhq"] = Field(
        description="`arcface`: ArcFace 5-point template scaled; `ffhq`: FFHQ quad."
    )
    size: int = Field(ge=64, description="Crop side in pixels.")

    @property
    def name(self) -> str:
        return f"{self.template}_{self.size}"


class AnnotateConfig(StrictConfig):
    """Annotations of every kept face."""

    crops: list[CropConfig] = Field(
        [CropConfig(template="arcface", size=256)],
        description="Aligned crops; the first is the primary crop (`jpg`), which landmarks "
        "and masks refer to; others are stored as `<template>_<size>.jpg`.",
    )
    jpeg_quality: int = Field(95, ge=50, le=100, description="JPEG quality of stored crops.")
    landmarks_468: bool = Field(True, description="Store FaceMesh 468-point landmarks.")
    mask_backend: Literal["auto", "unet", "bisenet", "parsenet", "facemesh", "none"] = Field(
        "auto",
        description="19-class label-map backend; `auto` = bisenet when its weights "
        "are present, else unet.",
    )

    @field_validator("crops")
    @classmethod
    def _some_crops(cls, v: list[CropConfig]) -> list[CropConfig]:
        if not v:
            raise ValueError("at least one crop is needed")
        if len({c.name for c in v}) != len(v):
            raise ValueError("crops must differ in template or size")
        return v


class SplitConfig(StrictConfig):
    """Held-out evaluation identities."""

    eval_identities: int = Field(
        8, ge=0, description="Identities (with ≥ min_images kept) held out for evaluation."
    )
    min_images: int = Field(2, ge=2, description="Kept images an evaluation identity needs.")
    seed: int = Field(0, description="Seed of the identity choice (hash-based, stable).")


class ShardConfig(StrictConfig):
    """WebDataset shard bounds."""

    max_samples: int = Field(1000, ge=1, description="Samples per shard at most.")
    max_bytes: int = Field(1_000_000_000, ge=1_000_000, description="Bytes per shard at most.")


class RayConfig(StrictConfig):
    """Ray execution."""

    address: str | None = Field(
        None, description="Cluster address; null = RAY_ADDRESS or a private local instance."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance.")
    num_actors: int = Field(2, ge=1, description="Actors (model holders) per pool.")
    cpus_per_actor: float = Field(
        0.5, gt=0, description="CPUs each actor reserves; fractional on small machines."
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu",
        description="Where the models run: `cuda` needs the gpu extra (onnxruntime-gpu) and "
        "gpus_per_actor > 0; an actor without CUDA stops with a one-line error.",
    )
    gpus_per_actor: float = Field(
        0.0, ge=0, description="GPUs each actor reserves (fractional: several share one)."
    )
    threads_per_actor: int = Field(1, ge=1, description="onnxruntime/torch threads per actor.")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Images (pass 1) or faces (pass 2) per model call; null = 32 on cuda and "
        "1 on the CPU, where one thread gains nothing from batches (measured: "
        "preprocessing.benchmarks.throughput).",
    )
    chunk_size: int = Field(
        2048,
        ge=1,
        description="Inputs per detection task (one Parquet file each; finished chunks are "
        "kept for resume).",
    )

    @property
    def model_batch(self) -> int:
        """Images or faces per model call: ``batch_size``, or its default for ``device``."""
        if self.batch_size is not None:
            return self.batch_size
        return 32 if self.device == "cuda" else 1

    @model_validator(mode="after")
    def _cuda_needs_gpus(self) -> RayConfig:
        if self.device == "cuda" and self.gpus_per_actor <= 0:
            raise ValueError("device cuda needs gpus_per_actor > 0 (e.g. 0.25: 4 actors a GPU)")
        return self


class PrepareConfig(StrictConfig):
    """The ``prepare`` stage: read, detect, filter, align, annotate, write shards + manifest."""

    sources: list[SourceConfig] = Field(description="Inputs; several are read in one run.")
    identity_model: str = Field(
        "mobilefacenet_128d", description="Registry name of the identity encoder (ONNX)."
    )
    detection: DetectionConfig = DetectionConfig()
    filters: FiltersConfig = FiltersConfig()
    annotate: AnnotateConfig = AnnotateConfig()
    split: SplitConfig = SplitConfig()
    shards: ShardConfig = ShardConfig()
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Images whose header claims more pixels are rejected."
    )
    ray: RayConfig = RayConfig()

    @field_validator("identity_model")
    @classmethod
    def _registered_identity(cls, name: str) -> str:
        return check_model_name(name, "recognition")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in v]
        if not names:
            raise ValueError("at least one source is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return v
