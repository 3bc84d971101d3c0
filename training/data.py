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
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
import torch

from infra.dataset_format import decode_embedding, decode_files
from infra.facemesh_topology import face_oval_mask
from infra.geometry import uint8_to_unit


def decode_sample(sample: dict, image_size: int, annotations: tuple[str, ...] = ()) -> dict:
    """Raw WebDataset sample → training tensors (files as :mod:`infra.dataset_format`).

    Returns ``{"image": (3, S, S) float32 in [-1, 1] RGB, "embedding": (D,) float32,
    "identity": str ("" when unknown), "key": str}`` plus each requested annotation of
    :data:`training.swappers.base.ANNOTATIONS`: ``face_mask`` (1, S, S) float32 in {0, 1},
    the FaceMesh face oval of ``lmk468.npy`` scaled from the primary crop to S; ``regions``
    (4, S, S) float32 in {0, 1}, RAFSwap's lips/nose/brows/eyes of ``regions.png``; ``pose``
    (3,) float32 yaw, pitch, roll in degrees (the sample's ``json``). Raises
    ValueError/KeyError on a bad sample or a missing annotation (the pipeline skips and
    counts it).
    """
    files = decode_files(sample, ("jpg", "json"))
    rgb = files["jpg"]
    crop = rgb.shape[0]
    if rgb.shape[0] != image_size or rgb.shape[1] != image_size:
        rgb = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_AREA)
    embedding = decode_embedding(sample["id.npy"], files["__key__"])
    out = {
        "image": uint8_to_unit(rgb),
        "embedding": torch.from_numpy(embedding),
        "identity": files["json"].get("identity") or "",
        "key": sample["__key__"],
    }
    for name in annotations:
        out[name] = _annotation(name, sample, files["json"], crop, image_size)
    return out


def _annotation(name: str, sample: dict, meta: dict, crop: int, size: int) -> torch.Tensor:
    """One per-target annotation (see :func:`decode_sample`); KeyError when the sample lacks
    the file or field it comes from, ValueError on another name."""
    if name == "face_mask":
        if "lmk468.npy" not in sample:
            raise KeyError(f"sample {sample.get('__key__', '')}: missing lmk468.npy")
        marks = decode_files(sample, ("lmk468.npy",))["lmk468.npy"] * (size / crop)
        return torch.from_numpy(face_oval_mask(marks, size))[None]
    if name == "regions":
        if "regions.png" not in sample:
            raise KeyError(f"sample {sample.get('__key__', '')}: missing regions.png")
        bits = decode_files(sample, ("regions.png",))["regions.png"]
        return torch.from_numpy(region_masks(bits, size))
    if name == "pose":
        yaw, pitch, roll = (float(meta["pose"][k]) for k in ("yaw", "pitch", "roll"))
        return torch.from_numpy(np.array([yaw, pitch, roll], np.float32))
    raise ValueError(f"unknown annotation {name!r}")


def region_masks(bits: np.ndarray, size: int) -> np.ndarray:
    """RAFSwap's four region masks from a ``regions.png`` bit image.

    bits : (C, C) uint8, bit k set where region k of
        :data:`preprocessing.parsing.regions.REGION_NAMES` (lips, nose, brows, eyes) is.
    Returns (4, size, size) float32 in {0, 1} (nearest-neighbour resize to ``size``).
    """
    if bits.shape[0] != size or bits.shape[1] != size:
        bits = cv2.resize(bits, (size, size), interpolation=cv2.INTER_NEAREST)
    return np.stack([(bits >> k) & 1 for k in range(4)]).astype(np.float32)


#: Prefix of an annotation read from the pair's *source* sample (``source_regions``).
SOURCE_PREFIX = "source_"


def sample_annotations(names: tuple[str, ...], as_target: bool, as_source: bool) -> tuple[str, ...]:
    """The annotations to decode for a sample used as a target and/or a source: the names
    without :data:`SOURCE_PREFIX` for a target, those with it (prefix removed) for a source."""
    out = [n for n in names if not n.startswith(SOURCE_PREFIX)] if as_target else []
    if as_source:
        out += [n[len(SOURCE_PREFIX) :] for n in names if n.startswith(SOURCE_PREFIX)]
    return tuple(dict.fromkeys(out))


def stack_annotations(
    targets: list[dict], names: tuple[str, ...], sources: list[dict] | None = None
) -> dict[str, torch.Tensor]:
    """The ``names`` annotations stacked over the batch: a plain name from the decoded
    target samples, a ``source_<name>`` one from the decoded source samples (``sources``,
    one per target)."""
    out = {}
    for n in names:
        if n.startswith(SOURCE_PREFIX):
            if sources is None:
                raise ValueError(f"annotation {n!r} needs the pairs' source samples")
            out[n] = torch.stack([s[n[len(SOURCE_PREFIX) :]] for s in sources])
        else:
            out[n] = torch.stack([t[n] for t in targets])
    return out


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
    annotations : per-pair annotations the swapper asked for, stacked over the batch
        (``face_mask`` (B, 1, S, S), ``regions`` (B, 4, S, S), ``pose`` (B, 3) of the
        targets, ``source_regions`` (B, 4, S, S) of the sources; see :func:`decode_sample`).
    """

    target: torch.Tensor
    source: torch.Tensor
    z_id: torch.Tensor
    same_image: torch.Tensor
    same_identity: torch.Tensor
    kind: str
    annotations: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> PairBatch:
        fields = ("target", "source", "z_id", "same_image", "same_identity", "kind")
        return cls(*(d[k] for k in fields), dict(d.get("annotations", {})))


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
