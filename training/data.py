"""Streaming training data from the prepared WebDataset shards.

Samples come from ``prepare`` (see ``preprocessing/shard_pass.py``): an aligned crop
(``jpg``), the precomputed identity embedding (``id.npy``) and metadata (``json``). The
source identity of a pair is the source sample's precomputed embedding: the data path
runs no identity network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import webdataset as wds


def decode_sample(sample: dict, image_size: int) -> dict:
    """Raw WebDataset sample → tensors.

    Returns ``{"image": (3, S, S) float32 in [-1, 1] RGB, "embedding": (D,) float32,
    "identity": str, "key": str}``. Raises ValueError on an undecodable image (the
    pipeline's handler skips and counts it).
    """
    buf = np.frombuffer(sample["jpg"], dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"sample {sample.get('__key__')}: undecodable jpg")
    if bgr.shape[0] != image_size or bgr.shape[1] != image_size:
        bgr = cv2.resize(bgr, (image_size, image_size), interpolation=cv2.INTER_AREA)
    image = (
        torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float() / 127.5 - 1
    )
    embedding = torch.from_numpy(np.load(io.BytesIO(sample["id.npy"]), allow_pickle=False)).float()
    meta = json.loads(sample["json"])
    return {
        "image": image,
        "embedding": embedding,
        "identity": meta.get("identity") or "",
        "key": sample["__key__"],
    }


def _collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "embedding": torch.stack([s["embedding"] for s in samples]),
        "identity": [s["identity"] for s in samples],
        "key": [s["key"] for s in samples],
    }


class SkipCounter:
    """WebDataset error handler that skips a bad sample and counts it (per process)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, exn: Exception) -> bool:
        self.count += 1
        return True


def make_loader(
    shards: list[str],
    image_size: int,
    batch_size: int,
    num_workers: int,
    seed: int,
    shuffle_buffer: int = 256,
    handler: SkipCounter | None = None,
) -> Iterator[dict]:
    """Infinite iterator of batches ``{"image": (B, 3, S, S), "embedding": (B, D), …}``.

    Shards are resampled (drawn with replacement, seeded per worker), samples shuffled in
    a buffer, bad samples skipped by ``handler``.
    """
    if not shards:
        raise ValueError("no training shards: did prepare keep any faces?")
    handler = handler or SkipCounter()
    pipeline = (
        wds.WebDataset(shards, resampled=True, shardshuffle=False, handler=handler, seed=seed)
        .shuffle(shuffle_buffer, seed=seed)
        .map(lambda s: decode_sample(s, image_size), handler=handler)
        .batched(batch_size, collation_fn=_collate, partial=False)
    )
    loader = wds.WebLoader(
        pipeline, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0
    )
    return iter(loader)


@dataclass
class Pairs:
    """A batch of swap pairs.

    Attributes
    ----------
    target : (B, 3, S, S) target faces X_t in [-1, 1].
    source : (B, 3, S, S) source faces X_s (for sample grids; the model sees only z_id).
    z_id : (B, D) precomputed source identity embeddings.
    same : (B,) bool, True where the source is the target image (reconstruction pairs).
    """

    target: torch.Tensor
    source: torch.Tensor
    z_id: torch.Tensor
    same: torch.Tensor


def make_pairs(batch: dict, same_ratio: float, generator: torch.Generator) -> Pairs:
    """Draw a source for every target: itself with probability ``same_ratio`` (FaceShifter
    thesis §5.1: 20 %), otherwise another sample of the batch."""
    images, emb = batch["image"], batch["embedding"]
    B = images.shape[0]
    same = torch.rand(B, generator=generator) < same_ratio
    other = (torch.arange(B) + torch.randint(1, B, (B,), generator=generator)) % B
    src = torch.where(same, torch.arange(B), other)
    return Pairs(target=images, source=images[src], z_id=emb[src], same=same)
