"""Typed config of the ``evaluate`` stage; mirrors ``params.yaml: evaluate``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from infra.config import StrictConfig


class BlendConfig(StrictConfig):
    """Pasting swaps back into the target frames (GHOST seed 001 §III.C)."""

    enabled: bool = Field(True, description="Blend swaps into the frames and score them again.")
    mask: Literal["labels", "landmarks"] = Field(
        "labels", description="Face mask from the shard's label map or the FaceMesh face oval."
    )
    adjust: bool = Field(
        True, description="GHOST: enlarge/shrink the mask when the swap is wider/narrower."
    )
    blur_fraction: float = Field(
        0.05,
        ge=0,
        description="Gaussian blur σ of the mask edge, fraction of the crop side "
        "(without `adjust`; GHOST's adjustment sets its own blur from the face width).",
    )
    examples: int = Field(8, ge=0, description="Blended frames drawn into blended.png.")
    method: Literal["alpha", "poisson"] = Field(
        "alpha",
        description="`alpha`: blurred-mask alpha blending (GHOST); `poisson`: Poisson image "
        "editing inside the (adjusted) mask, OpenCV seamless cloning (seed 000 §II.A).",
    )


class FidConfig(StrictConfig):
    enabled: bool = Field(True, description="FID/KID of swaps against targets (InceptionV3).")
    kid_subset_size: int = Field(50, ge=2, description="KID subset size (capped by the count).")


class EvaluateConfig(StrictConfig):
    """The ``evaluate`` stage: swap held-out identities N sources × M targets and score the
    swaps with models training never used."""

    num_sources: int = Field(
        8, ge=2, description="Held-out identities used as sources (1 face each)."
    )
    num_targets: int = Field(8, ge=2, description="Held-out identities used as targets.")
    targets_per_identity: int = Field(
        1,
        ge=1,
        description="Faces per target identity (FaceForensics++ style: 10 frames per "
        "video when each identity is a video's frames).",
    )
    recognizer: str = Field(
        "dlib_resnet",
        description="Recogniser, an identity encoder training never used: `dlib_resnet` or "
        "a registered ONNX recognition model other than the training one "
        "(e.g. arcface_w600k_r50).",
    )
    generator: str = Field(
        "train",
        description="Generator to evaluate: `train` (the train stage's generator.pt) or a "
        "released swapper of training.released.RELEASED (ghost_unet_2blocks, simswap_224), "
        "whose outputs go to `<output_dir>/evaluate-<name>/`.",
    )

    @field_validator("generator")
    @classmethod
    def _known_generator(cls, name: str) -> str:
        from training.released import check_generator_name

        return check_generator_name(name)

    batch_size: int = Field(16, ge=1, description="Swaps per forward pass.")
    paper_metrics: Literal["auto", "off"] = Field(
        "auto",
        description="Paper-compatible `paper` group: `auto` computes each of CosFace identity "
        "retrieval, Hopenet pose error and Deep3DFaceRecon expression error whose weights are "
        "in the models directory (the others are reported as not computed); `off` skips it.",
    )

    @field_validator("paper_metrics", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads an unquoted ``off`` as False (``on`` as True): map them back."""
        return {False: "off", True: "auto"}[value] if isinstance(value, bool) else value

    matrix_cell: int = Field(96, ge=32, description="Side of one face-matrix cell in pixels.")
    blend: BlendConfig = BlendConfig()
    fid: FidConfig = FidConfig()
