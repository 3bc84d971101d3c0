"""Input items, rejection reasons and the manifest schema of the ``prepare`` stage.

The manifest (``manifest.parquet``) has exactly one row per input file: ``status`` is
``kept`` or ``rejected``, ``reason`` says why a file was rejected, and the measured values
behind each decision (image size, face count, face size, detector score) sit beside it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import pyarrow as pa

KEPT = "kept"
REJECTED = "rejected"


class Reason:
    """Rejection reasons beyond those of :class:`preprocessing.decode.Reason`."""

    LISTED_TWICE = "listed_twice"
    DETECT_ERROR = "detect_error"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    ANNOTATE_ERROR = "annotate_error"


@dataclass(frozen=True)
class InputItem:
    """One input file as listed by a source reader.

    Attributes
    ----------
    key : stable sample key, ``sha1(source + "/" + listed path)[:16]`` (hex).
    source : source name from the config.
    path : absolute file path.
    listed : the path as the source listed it (relative to its root).
    identity : identity label, ``source:label``; None when the source has none.
    """

    key: str
    source: str
    path: str
    listed: str
    identity: str | None

    def to_row(self) -> dict:
        return asdict(self)


def make_key(source: str, listed: str) -> str:
    """Stable 16-hex-digit key of an input (no dots, safe as a WebDataset key)."""
    return hashlib.sha1(f"{source}/{listed}".encode()).hexdigest()[:16]


#: Columns written by the detection pass, one row per input.
DETECTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("path", pa.string()),
        ("listed", pa.string()),
        ("identity", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_detections", pa.int32()),
        ("num_faces", pa.int32()),
        ("det_padded", pa.bool_()),
        ("det_score", pa.float32()),
        ("face_size", pa.float32()),
        ("bbox", pa.list_(pa.float32())),
        ("landmarks", pa.list_(pa.float32())),
    ]
)

#: The manifest: detection columns plus the decision and where a kept face was written.
MANIFEST_SCHEMA = pa.schema(
    [
        *[f for f in DETECTION_SCHEMA if f.name not in ("reason", "detail")],
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
    ]
)
