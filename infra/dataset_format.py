"""The prepared dataset's format, in one place: sample files, their codecs, and the card.

``prepare`` writes WebDataset shards whose samples hold the files of :data:`SAMPLE_FILES`
and a ``dataset.json`` card (:class:`DatasetCard`); ``train`` and ``evaluate`` read both
through this module only. The card's description of the sample files
(``annotations.files``) is generated from the same table (:func:`describe_files`), so the
writer, the readers and the card cannot disagree about a key.

=================  =====  ==========================================================
file               codec  content
=================  =====  ==========================================================
``jpg``            jpg    primary aligned crop, RGB uint8 (S, S, 3)
``<crop>.jpg``     jpg    further crops (``annotate.crops[1:]``, e.g. ``ffhq_256.jpg``)
``id.npy``         npy    L2-normalised identity embedding, float32 (D,)
``lmk468.npy``     npy    FaceMesh landmarks, float32 (468, 3), primary-crop pixels
``mask.png``       png    19-class CelebAMask-HQ label map, uint8 (S, S)
``regions.png``    png    RAFSwap regions as bits (1 lips, 2 nose, 4 brows, 8 eyes)
``gtmask.png``     png    ground-truth label map in the primary crop
``json``           json   identity, source, path, split, bbox, landmarks, pose, transforms
=================  =====  ==========================================================
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, Field

#: Card format this code writes and reads.
FORMAT = "faceswap-wds/1"


@dataclass(frozen=True)
class SampleFile:
    """One file of a sample: its WebDataset key, codec and card description.

    ``description`` is a ``str.format`` template over the fields of :func:`describe_files`.
    """

    key: str
    codec: str
    description: str


#: Every file a sample may hold, in the order the writer emits them (``<crop>.jpg`` stands for
#: each further crop).
SAMPLE_FILES: tuple[SampleFile, ...] = (
    SampleFile("jpg", "jpg", "primary aligned crop, {template} template, {size} px"),
    SampleFile("<crop>.jpg", "jpg", "{template} crop, {size} px"),
    SampleFile("id.npy", "npy", "L2-normalised identity embedding, float32 ({id_dim},)"),
    SampleFile("lmk468.npy", "npy", "FaceMesh landmarks, float32 (468, 3), primary-crop pixels"),
    SampleFile(
        "mask.png", "png", "19-class CelebAMask-HQ label map ({backend}), primary-crop pixels"
    ),
    SampleFile("regions.png", "png", "RAFSwap regions as bits {regions} (bit 0 first)"),
    SampleFile(
        "gtmask.png", "png", "ground-truth label map in the primary crop (sources with masks)"
    ),
    SampleFile(
        "json",
        "json",
        "identity, source, path, split, bbox, 5-point landmarks (image and crop), "
        "pose (yaw, pitch, roll, eye_roll in degrees), crop transforms (2x3 image->crop)",
    ),
)
_BY_KEY = {f.key: f for f in SAMPLE_FILES}


def codec_of(key: str) -> str:
    """Codec of a sample file key (``jpg``, ``npy``, ``png``, ``json``); KeyError if unknown."""
    if key in _BY_KEY:
        return _BY_KEY[key].codec
    if key.endswith(".jpg"):
        return "jpg"
    raise KeyError(f"unknown sample file {key!r} (known: {[f.key for f in SAMPLE_FILES]})")


# ---- codecs -----------------------------------------------------------------------------


def encode_jpg(rgb: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB → JPEG bytes at ``quality`` (1–100). RuntimeError on failure."""
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(gray: np.ndarray) -> bytes:
    """(H, W) uint8 label map → lossless PNG bytes. RuntimeError on failure."""
    ok, buf = cv2.imencode(".png", gray)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_npy(arr: np.ndarray) -> bytes:
    """Array → ``.npy`` bytes, stored as float32, no pickle."""
    b = io.BytesIO()
    np.save(b, np.asarray(arr).astype(np.float32), allow_pickle=False)
    return b.getvalue()


def encode_json(meta: dict) -> bytes:
    """Metadata → UTF-8 JSON with sorted keys (NaN refused, so the bytes are portable)."""
    return json.dumps(meta, sort_keys=True, allow_nan=False).encode()


def decode_jpg(data: bytes) -> np.ndarray:
    """JPEG bytes → (H, W, 3) uint8 RGB, contiguous. ValueError when undecodable."""
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("undecodable jpg")
    return np.ascontiguousarray(bgr[..., ::-1])


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes → (H, W) uint8 label map, values unchanged. ValueError when undecodable."""
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("undecodable png")
    return arr


def decode_npy(data: bytes) -> np.ndarray:
    """``.npy`` bytes → array (float32 as written), no pickle."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_json(data: bytes) -> dict:
    """JSON bytes → dict."""
    return json.loads(data)


_ENCODERS = {"jpg": encode_jpg, "png": encode_png, "npy": encode_npy, "json": encode_json}
_DECODERS = {"jpg": decode_jpg, "png": decode_png, "npy": decode_npy, "json": decode_json}


def encode_sample(key: str, files: dict[str, Any], jpeg_quality: int) -> dict[str, Any]:
    """A WebDataset sample ``{"__key__": key, file: bytes, …}`` from decoded values.

    ``files`` maps sample file keys to arrays (``jpg``: RGB uint8, ``png``: uint8 label map,
    ``npy``: array, ``json``: dict); None values are left out. KeyError on an unknown key.
    """
    sample: dict[str, Any] = {"__key__": key}
    for name, value in files.items():
        if value is None:
            continue
        codec = codec_of(name)
        enc = _ENCODERS[codec]
        sample[name] = enc(value, jpeg_quality) if codec == "jpg" else enc(value)
    return sample


def decode_files(sample: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Decode the listed files of a raw sample (absent optional files give None).

    ``jpg``, ``id.npy`` and ``json`` are required: KeyError names a missing one;
    ValueError names an undecodable one (training skips and counts such samples).
    """
    out: dict[str, Any] = {"__key__": sample.get("__key__", "")}
    for name in keys:
        if name not in sample:
            if name in ("jpg", "id.npy", "json"):
                raise KeyError(f"sample {out['__key__']}: missing {name}")
            out[name] = None
            continue
        try:
            out[name] = _DECODERS[codec_of(name)](sample[name])
        except ValueError as e:
            raise ValueError(f"sample {out['__key__']}: {name}: {e}") from e
    return out


def decode_embedding(data: bytes, key: str = "") -> np.ndarray:
    """``id.npy`` bytes → (D,) float32; ValueError unless 1-D and finite."""
    emb = decode_npy(data).astype(np.float32, copy=False)
    if emb.ndim != 1 or not np.isfinite(emb).all():
        raise ValueError(f"sample {key}: bad embedding {tuple(emb.shape)}")
    return emb


def read_shard(url: str, handler=None) -> Iterator[dict]:
    """All raw samples of one shard, in order, whatever the process or worker (callers split
    shards themselves; webdataset's node and worker splitters are off). ``handler``: a
    webdataset error handler (default: re-raise)."""
    import webdataset as wds

    return iter(
        wds.WebDataset(
            url,
            shardshuffle=False,
            nodesplitter=None,
            workersplitter=None,
            handler=handler or wds.reraise_exception,
            empty_check=False,
        )
    )


def describe_files(
    template: str,
    size: int,
    extra_crops: list[tuple[str, str, int]],
    id_dim: int,
    landmarks_468: bool,
    backend: str | None,
    regions: list[str],
) -> dict[str, str | None]:
    """The card's ``annotations.files``: each sample file → what it holds (None = not written).

    ``extra_crops``: (file stem, template, size) of the crops after the primary one.
    """
    fields = {
        "template": template,
        "size": size,
        "id_dim": id_dim,
        "backend": backend,
        "regions": list(regions),
    }
    present = {"lmk468.npy": landmarks_468, "mask.png": bool(backend), "regions.png": bool(backend)}
    out: dict[str, str | None] = {}
    for f in SAMPLE_FILES:
        if f.key == "<crop>.jpg":
            for stem, tmpl, sz in extra_crops:
                out[f"{stem}.jpg"] = f.description.format(template=tmpl, size=sz)
            continue
        out[f.key] = f.description.format(**fields) if present.get(f.key, True) else None
    return out


# ---- the dataset card --------------------------------------------------------------------


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
    """The content of ``dataset.json``: written by ``prepare``; ``train`` and ``evaluate``
    take the image size, crop template and embedding dimension from it, never from their
    own settings."""

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
        """Read ``<folder>/dataset.json``.

        Raises DatasetMissingError (a FileNotFoundError) naming the folder and the fix, and
        ValueError when the card's format is not the one this code reads.
        """
        path = Path(folder) / "dataset.json"
        if not path.is_file():
            raise DatasetMissingError(
                f"{path} not found: run the prepare stage first (fsp prepare)"
            )
        card = cls.model_validate_json(path.read_text())
        if card.format != FORMAT:
            raise ValueError(f"{path}: format {card.format!r}, this code reads {FORMAT!r}")
        return card

    def shard_paths(self, folder: Path, split: str) -> list[str]:
        """Absolute shard paths of a split; KeyError names the available splits."""
        if split not in self.splits:
            raise KeyError(f"split {split!r} not in dataset (has {sorted(self.splits)})")
        return [str(Path(folder) / s) for s in self.splits[split].shards]

    def samples_of(
        self, folder: Path, split: str, identity: str, limit: int | None = None
    ) -> Iterator[dict]:
        """Raw samples of one identity in a split, in shard order (at most ``limit``).
        Only the shards :attr:`shard_index` lists as holding the identity are opened (all of
        the split's when the card has no index). KeyError names the available splits."""
        shards = self.shard_paths(folder, split)
        held = {
            str(Path(folder) / k) for k, v in self.shard_index.items() if identity in v.identities
        }
        n = 0
        for url in [s for s in shards if s in held] if self.shard_index else shards:
            for raw in read_shard(url):
                if limit is not None and n >= limit:
                    return
                if _identity_of(raw) == identity:
                    n += 1
                    yield raw


def _identity_of(raw: dict) -> str:
    """The ``identity`` of a raw sample's ``json`` ("" when absent or undecodable)."""
    try:
        return decode_json(raw["json"]).get("identity") or ""
    except (KeyError, ValueError):
        return ""


class DatasetMissingError(FileNotFoundError):
    """The prepared dataset (``dataset.json``) is not where a stage looks for it."""
