"""Typed config of ``fsp swap``; mirrors ``params.yaml: swap``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from infra.config import StrictConfig
from preprocessing.config import DetectionConfig


class PasteConfig(StrictConfig):
    """Pasting a swapped crop back into its frame (GHOST seed 001 §III.C)."""

    method: Literal["alpha", "poisson"] = Field(
        "alpha",
        description="`alpha`: Gaussian-blurred face mask (GHOST); `poisson`: Poisson image "
        "editing inside the mask (OpenCV seamless cloning).",
    )
    adjust: bool = Field(
        True, description="GHOST: enlarge/shrink the mask when the swap is wider/narrower."
    )
    blur_fraction: float = Field(
        0.05,
        ge=0,
        description="Gaussian σ of the mask edge, fraction of the crop side (without `adjust`).",
    )


class TemporalConfig(StrictConfig):
    """Smoothing of each tracked face's 5 landmarks over video frames (GHOST's jitter)."""

    smoothing: float = Field(
        0.6,
        ge=0,
        lt=1,
        description="Weight of the previous smoothed landmarks (exponential smoothing); "
        "0 = off (every frame aligned on its own detection).",
    )
    reset_motion: float = Field(
        0.25,
        gt=0,
        description="A landmark jump larger than this fraction of the eye distance restarts "
        "the smoothing (a cut or a fast move: no lag).",
    )
    track_iou: float = Field(
        0.3, gt=0, le=1, description="Box overlap that links a face to the previous frame's."
    )


class VideoConfig(StrictConfig):
    """Encoding of the output video (frame rate, frame count and audio follow the input)."""

    codec: str = Field("libx264", description="FFmpeg encoder of the output video stream.")
    pix_fmt: str = Field("yuv420p", description="Pixel format of the output video stream.")
    crf: int | None = Field(18, ge=0, le=51, description="x264/x265 quality; None = default.")


class SwapConfig(StrictConfig):
    """``fsp swap``: swap a source face into images or videos with a trained generator."""

    faces: Literal["largest", "all", "reference"] = Field(
        "largest",
        description="Which target faces are swapped: the largest, every face (of at least "
        "detection.min_relative_size × the largest face's side), or the face nearest (ArcFace "
        "cosine) to a reference image's face (`--reference`).",
    )
    detection: DetectionConfig = DetectionConfig(min_relative_size=0.3)
    paste: PasteConfig = PasteConfig()
    super_resolution: str = Field(
        "auto",
        description="Face restoration after pasting: `auto` (the registered model when its "
        "file is in the models dir), `off`, or a registry name (task `restoration`).",
    )

    @field_validator("super_resolution", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads an unquoted ``off`` as False (``on`` as True): map them back."""
        return {False: "off", True: "auto"}[value] if isinstance(value, bool) else value

    @field_validator("super_resolution")
    @classmethod
    def _restoration_model(cls, name: str) -> str:
        if name in ("auto", "off"):
            return name
        from infra.models import check_model_name

        return check_model_name(name, "restoration")

    temporal: TemporalConfig = TemporalConfig()
    video: VideoConfig = VideoConfig()
    batch_size: int = Field(8, ge=1, description="Faces per generator call.")
