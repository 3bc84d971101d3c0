"""Training pairs: the batch type, sample decoding and the epoch loader, whatever the access.

Two sources of pair batches, chosen by ``train.data.access``:

* ``indexed`` (:mod:`training.indexed_pairs`) — random access to the shards; pairs drawn over
  the whole training split (Identity Grouping uniform over all identities);
* ``stream`` (:mod:`training.stream_pairs`) — sequential shard reads; pairs drawn from a
  per-worker buffer.

Both give dicts of :class:`PairBatch` fields plus ``skipped`` (bad samples met while making
that batch); :class:`EpochLoader` steps through their epochs and keeps the count. The source
identity of a pair is the source sample's precomputed embedding: the data path runs no
identity network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import cv2
import torch

from infra.dataset_format import decode_embedding, decode_files
from infra.geometry import uint8_to_unit


def decode_sample(sample: dict, image_size: int) -> dict:
    """Raw WebDataset sample → training tensors (files as :mod:`infra.dataset_format`).

    Returns ``{"image": (3, S, S) float32 in [-1, 1] RGB, "embedding": (D,) float32,
    "identity": str ("" when unknown), "key": str}``. Raises ValueError/KeyError on a bad
    sample (the pipeline skips and counts it).
    """
    files = decode_files(sample, ("jpg", "json"))
    rgb = files["jpg"]
    if rgb.shape[0] != image_size or rgb.shape[1] != image_size:
        rgb = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_AREA)
    embedding = decode_embedding(sample["id.npy"], files["__key__"])
    return {
        "image": uint8_to_unit(rgb),
        "embedding": torch.from_numpy(embedding),
        "identity": files["json"].get("identity") or "",
        "key": sample["__key__"],
    }


@dataclass
class PairBatch:
    """A batch of swap pairs.

    Attributes
    ----------
    target : (B, 3, S, S) target faces X_t in [-1, 1].
    source : (B, 3, S, S) source faces X_s (for sample grids; models see only ``z_id``).
    z_id : (B, D) precomputed source identity embeddings (L2-normalised).
    same_image : (B,) bool, source is the target image.
    same_identity : (B,) bool, source and target share a known identity (or image).
    kind : ``mixed``, ``intra`` or ``inter`` (SimSwap alternates intra-ID/inter-ID batches).
    """

    target: torch.Tensor
    source: torch.Tensor
    z_id: torch.Tensor
    same_image: torch.Tensor
    same_identity: torch.Tensor
    kind: str

    @classmethod
    def from_dict(cls, d: dict) -> PairBatch:
        return cls(
            d["target"], d["source"], d["z_id"], d["same_image"], d["same_identity"], d["kind"]
        )


class PairSource(Protocol):
    """What :class:`EpochLoader` reads: epochs of pair-batch dicts."""

    def open_epoch(self, epoch: int, start: int, num_workers: int) -> Iterator[dict]:
        """Batches ``start``, ``start + 1``, … of ``epoch``, read by ``num_workers``."""
        ...


class EpochLoader:
    """Steps through epochs of ``steps_per_epoch`` batches and counts the bad samples the
    source skipped.

    ``start_step`` resumes mid-epoch: the source opens the epoch at that batch, so a resumed
    run sees exactly the batches an uninterrupted run would; ``skipped_before`` is the count
    saved with the checkpoint.
    """

    def __init__(
        self,
        source: PairSource,
        num_workers: int,
        steps_per_epoch: int,
        start_step: int = 0,
        skipped_before: int = 0,
    ):
        self.source, self.num_workers, self.steps_per_epoch = source, num_workers, steps_per_epoch
        self.step = start_step
        self.skipped = skipped_before
        self._it: Iterator[dict] | None = None

    def state_dict(self) -> dict:
        """Position to resume from: the step and the bad samples skipped up to it."""
        return {"step": self.step, "skipped": self.skipped}

    def __next__(self) -> PairBatch:
        if self._it is None or self.step % self.steps_per_epoch == 0:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            self._it = self.source.open_epoch(epoch, start, self.num_workers)
        d = next(self._it)
        self.skipped += int(d["skipped"])
        self.step += 1
        return PairBatch.from_dict(d)

    def __iter__(self) -> EpochLoader:
        return self
