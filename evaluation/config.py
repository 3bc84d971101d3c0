"""Typed config of the ``evaluate`` stage; mirrors ``params.yaml: evaluate``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvaluateConfig(BaseModel):
    """The ``evaluate`` stage: swap held-out pairs, score identity transfer and
    reconstruction, draw the source × target face matrix."""

    model_config = ConfigDict(extra="forbid")

    num_identities: int = Field(
        8, ge=2, description="Held-out identities in the N×N pair protocol (one face each)."
    )
    batch_size: int = Field(16, ge=1, description="Swaps per forward pass.")
    matrix_cell: int = Field(96, ge=32, description="Side of one face-matrix cell in pixels.")
    experiment: str = Field(
        "faceswap", description="MLflow experiment (used when the training run is unknown)."
    )
