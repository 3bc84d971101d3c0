"""``dataset.json``: the self-describing card of a prepared dataset.

Written by ``prepare``, read by ``train`` and ``evaluate``: they take the image size,
crop template and embedding dimension from here, never from their own settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

FORMAT = "faceswap-wds/1"


class SplitInfo(BaseModel):
    """One split (``train`` or ``eval``)."""

    shards: list[str] = Field(description="Shard files, relative to the dataset folder.")
    num_samples: int
    identities: dict[str, int] = Field(description="Kept faces per identity.")


class ShardInfo(BaseModel):
    """One shard file: lets a trainer pick shards by identity without opening them."""

    split: str
    num_samples: int
    bytes: int
    identities: dict[str, int]


class CropInfo(BaseModel):
    template: str = Field(description="Alignment template, e.g. `arcface`.")
    size: int = Field(description="Aligned crop side in pixels.")


class ModelRef(BaseModel):
    name: str
    sha256: str


class EmbeddingInfo(ModelRef):
    dim: int = Field(description="Embedding dimension, read from the model.")


class DatasetCard(BaseModel):
    """The content of ``dataset.json``."""

    format: str = FORMAT
    num_inputs: int = Field(description="Input files, = manifest rows.")
    num_samples: int = Field(description="Kept faces written to shards.")
    splits: dict[str, SplitInfo]
    crop: CropInfo
    embedding: EmbeddingInfo
    detector: ModelRef
    funnel: list[dict] = Field(description="Filter funnel: step, rejected, remaining.")
    thresholds: dict[str, float] = Field({}, description="Values computed from the data.")
    annotations: dict = Field({}, description="What each sample holds and how it was made.")
    shard_index: dict[str, ShardInfo] = Field({}, description="Per shard file (relative path).")
    rejections: dict[str, int] = Field(description="Rejected inputs per reason.")
    settings: dict = Field(description="The resolved prepare config that produced the data.")

    def save(self, folder: Path) -> Path:
        path = Path(folder) / "dataset.json"
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, folder: Path) -> DatasetCard:
        """Read ``<folder>/dataset.json``; FileNotFoundError names the folder."""
        path = Path(folder) / "dataset.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run the prepare stage first")
        card = cls.model_validate_json(path.read_text())
        if card.format != FORMAT:
            raise ValueError(f"{path}: format {card.format!r}, this code reads {FORMAT!r}")
        return card

    def shard_paths(self, folder: Path, split: str) -> list[str]:
        """Absolute shard paths of a split; KeyError names the available splits."""
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in dataset (has {sorted(self.splits)})")
        return [str(Path(folder) / s) for s in self.splits[split].shards]
