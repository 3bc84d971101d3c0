"""Safe image decoding: every failure becomes a rejection reason, never an exception.

Images are returned as RGB ``uint8`` arrays of shape ``(H, W, 3)``, EXIF orientation
applied. The header is read before the pixels so an image that claims a huge size is
rejected without allocating it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from preprocessing.records import Reason

# PIL's own bomb guard raises inside open(); the project applies its own limit instead.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class Decoded:
    """Result of :func:`decode_image`.

    Attributes
    ----------
    image : (H, W, 3) uint8 RGB array, or None when rejected.
    reason : rejection reason (:class:`preprocessing.records.Reason`), None when decoded.
    detail : human-readable message for the manifest.
    width, height : pixel size after EXIF orientation (header size when rejected late).
    """

    image: np.ndarray | None
    reason: Reason | None = None
    detail: str = ""
    width: int = 0
    height: int = 0


def read_bytes(path: Path) -> tuple[bytes | None, Reason | None, str]:
    """Read a file; returns ``(data, reason, detail)`` with ``data=None`` on failure."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:  # missing, permission denied, a directory, I/O error
        return None, Reason.UNREADABLE, f"{type(e).__name__}: {e.strerror or e}"
    if not data:
        return None, Reason.EMPTY_FILE, "file has 0 bytes"
    return data, None, ""


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL mode → (H, W, 3) uint8 RGB. 16-bit and float images are rescaled, alpha is
    composited on black."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def decode_image(data: bytes, max_pixels: int) -> Decoded:
    """Decode encoded image bytes to RGB.

    Parameters
    ----------
    data : encoded file content (JPEG, PNG, WebP, BMP, TIFF, GIF…); an animated image
        (GIF, WebP, APNG) decodes to its first frame.
    max_pixels : largest accepted ``width * height`` read from the header.

    Returns
    -------
    Decoded with ``image`` set, or with ``reason`` one of ``not_an_image``, ``too_large``,
    ``corrupt_image``. Never raises for bad input.
    """
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return Decoded(None, Reason.NOT_AN_IMAGE, "not a recognised image format")
    except Exception as e:  # malformed header
        return Decoded(None, Reason.CORRUPT_IMAGE, f"{type(e).__name__}: {e}")
    width, height = img.size
    if width * height > max_pixels:
        return Decoded(
            None,
            Reason.TOO_LARGE,
            f"header claims {width}x{height} = {width * height} px > {max_pixels}",
            width,
            height,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb8(img)
    except Exception as e:  # truncated data, bad Huffman tables, unsupported mode…
        return Decoded(None, Reason.CORRUPT_IMAGE, f"{type(e).__name__}: {e}", width, height)
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return Decoded(None, Reason.CORRUPT_IMAGE, f"decoded to shape {rgb.shape}", width, height)
    return Decoded(np.ascontiguousarray(rgb), None, "", rgb.shape[1], rgb.shape[0])


def load_image(path: Path, max_pixels: int) -> Decoded:
    """:func:`read_bytes` then :func:`decode_image`; the failure reasons of both."""
    data, reason, detail = read_bytes(path)
    if data is None:
        return Decoded(None, reason, detail)
    return decode_image(data, max_pixels)
