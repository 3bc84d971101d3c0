"""Hand-made bad and awkward inputs, built from one real face photo."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .conftest import FACES

FACE = FACES / "misc_single" / "inspireface_Rob_Lowe_0001.jpg"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_header_png(side: int = 30000) -> bytes:
    """A PNG whose IHDR claims side × side RGB pixels but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(rgb: np.ndarray) -> bytes:
    """The face stored rotated 90° clockwise with EXIF orientation 6 ("rotate 90 CW to view")."""
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))  # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def make_bad_inputs(folder: Path) -> dict[str, str | None]:
    """Write the files; returns {file name: expected rejection reason or None (decodes)}."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = FACE.read_bytes()
    rgb = np.asarray(Image.open(FACE).convert("RGB"))
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, reason: str | None) -> None:
        (folder / name).write_bytes(data)
        expected[name] = reason

    put("zero_bytes.jpg", b"", "empty_file")
    put("truncated.jpg", raw[: len(raw) // 3], "corrupt_image")
    put("text_file.jpg", b"this is not an image\n" * 10, "not_an_image")
    put("huge_header.png", huge_header_png(), "too_large")
    put("exif_rotated.jpg", exif_rotated_jpeg(rgb), None)

    def save(name: str, img: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        put(name, buf.getvalue(), None)

    alpha = Image.fromarray(rgb).convert("RGBA")
    alpha.putalpha(Image.new("L", alpha.size, 200))
    save("alpha.png", alpha, "PNG")
    save("gray.jpg", Image.fromarray(rgb).convert("L"), "JPEG", quality=95)
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    gray16 = (np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257).astype(
        np.uint16
    )
    ok, png16 = cv2.imencode(".png", gray16)  # cv2 writes true 16-bit PNGs
    assert ok
    put("gray16.png", png16.tobytes(), None)
    put("name with spaces é ü 名字.jpg", raw, None)
    (folder / "dangling.jpg").symlink_to(folder / "does_not_exist.jpg")
    expected["dangling.jpg"] = "unreadable"
    (folder / "a_directory.jpg").mkdir()
    expected["a_directory.jpg"] = "unreadable"
    return expected
