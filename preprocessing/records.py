"""Input items, rejection reasons and the table schemas of the ``prepare`` stage.

The manifest (``manifest.parquet``) has exactly one row per input file: ``status`` is
``kept`` or ``rejected``, ``reason`` says which step rejected it, ``detail`` says why in
words, and the measured values behind every decision (image size, pHash, face count, face
size, aspect ratio, pose) sit beside it. ``path`` and ``mask_path`` are relative to
``paths.data_root`` for files under it (absolute only for a source outside it), so the
manifest and the detection chunks hold no path of the machine and hash the same in every
clone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from enum import StrEnum

import pyarrow as pa

KEPT = "kept"
REJECTED = "rejected"


class Reason(StrEnum):
    """Why an input was rejected: the manifest's ``reason`` column (values are plain strings).

    The one list of reasons of the stage, grouped by the funnel step that assigns them
    (:data:`preprocessing.filters.FUNNEL`): ``listed`` (readers), ``duplicate_entries``,
    ``readable`` (decoding, :mod:`preprocessing.decode`, and the detection pass),
    ``near_duplicates``, ``single_face``, ``size``, ``aspect``, ``tilt``, then ``annotated``
    (pass 2).
    """

    # listed — the source readers
    LISTED_TWICE = "listed_twice"
    HIDDEN_FILE = "hidden_file"
    UNSUPPORTED_EXTENSION = "unsupported_extension"
    # duplicate_entries
    DUPLICATE_ENTRY = "duplicate_entry"
    # readable — decoding (preprocessing.decode) and the detection pass
    UNREADABLE = "unreadable"
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"
    TOO_LARGE = "too_large"
    CORRUPT_IMAGE = "corrupt_image"
    DETECT_ERROR = "detect_error"
    # near_duplicates
    NEAR_DUPLICATE = "near_duplicate"
    # single_face
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    # size
    SMALL_FACE = "small_face"
    # aspect
    ASPECT_RATIO = "aspect_ratio"
    # tilt
    TILTED = "tilted"
    # annotated — pass 2
    ANNOTATE_ERROR = "annotate_error"


@dataclass(frozen=True, slots=True)
class InputItem:
    """One input file as listed by a source reader.

    Attributes
    ----------
    key : stable sample key, ``sha1(source + "/" + listed path)[:16]`` (hex).
    source : source name from the config.
    path : file path relative to ``paths.data_root`` (POSIX) when the file lies under it,
        absolute otherwise (:func:`preprocessing.sources.data_relative`); open it through
        :meth:`infra.paths.ProjectPaths.data_path`.
    listed : the path as the source listed it (relative to its root).
    identity : identity label ``source:label`` (kept when the label has a prefix); None
        when the source has none.
    mask_path : ground-truth label map of the image (CelebAMask-HQ), if any; stored like
        ``path``.
    reason, detail : set when the reader already rejects the file (e.g. unsupported
        extension); None otherwise.
    """

    key: str
    source: str
    path: str
    listed: str
    identity: str | None
    mask_path: str | None = None
    reason: Reason | None = None
    detail: str = ""

    def to_row(self) -> dict:
        """The item as a plain dict (field name → value)."""
        return {f: getattr(self, f) for f in _INPUT_FIELDS}


_INPUT_FIELDS = tuple(f.name for f in fields(InputItem))


def make_key(source: str, listed: str) -> str:
    """Stable 16-hex-digit key of an input (no dots, safe as a WebDataset key)."""
    return hashlib.sha1(f"{source}/{listed}".encode()).hexdigest()[:16]


_ITEM_FIELDS = [
    ("key", pa.string()),
    ("source", pa.string()),
    ("path", pa.string()),
    ("listed", pa.string()),
    ("identity", pa.string()),
    ("mask_path", pa.string()),
]

_MEASURED = [
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("phash", pa.string()),
    ("num_detections", pa.int32()),
    ("num_faces", pa.int32()),
    ("det_padded", pa.bool_()),
    ("det_score", pa.float32()),
    ("face_size", pa.float32()),
    ("bbox", pa.list_(pa.float32())),
    ("landmarks", pa.list_(pa.float32())),
    ("yaw", pa.float32()),
    ("pitch", pa.float32()),
    ("roll", pa.float32()),
    ("eye_roll", pa.float32()),
]

#: Rows written by the detection pass, one per input.
DETECTION_SCHEMA = pa.schema(
    [*_ITEM_FIELDS, ("reason", pa.string()), ("detail", pa.string()), *_MEASURED]
)

#: The manifest: inputs, measurements, the decision and where a kept face was written.
MANIFEST_SCHEMA = pa.schema(
    [
        *_ITEM_FIELDS,
        ("status", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        *_MEASURED,
        ("aspect", pa.float32()),
        ("near_duplicate_of", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
    ]
)
