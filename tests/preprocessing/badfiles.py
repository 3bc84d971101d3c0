"""Hand-made bad and awkward inputs, built from real face photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tests.conftest import FACES

FACE = FACES / "misc_single" / "inspireface_Rob_Lowe_0001.jpg"
#: Distinct single-face photos, one per awkward variant (so none is a near duplicate).
PHOTOS = {
    "exif_rotated.jpg": FACES / "lfw_subset_krasserm/Hugo_Chavez/Hugo_Chavez_0001.jpg",
    "alpha.png": FACES / "lfw_subset_krasserm/Jacques_Chirac/Jacques_Chirac_0001.jpg",
    "gray.jpg": FACES / "lfw_subset_krasserm/Colin_Powell/Colin_Powell_0002.jpg",
    "cmyk.jpg": FACES / "lfw_subset_krasserm/Tony_Blair/Tony_Blair_0002.jpg",
    "gray16.png": FACES / "lfw_subset_krasserm/Donald_Rumsfeld/Donald_Rumsfeld_0001.jpg",
    "name with spaces é ü 名字.jpg": FACE,
}


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
    """The photo stored rotated 90° counter-clockwise with EXIF orientation 6 ("rotate 90° CW
    to view"): a viewer that honours EXIF shows it upright."""
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def rgb_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def make_bad_inputs(folder: Path) -> dict[str, str | None]:
    """Write the files; returns {file name: expected decode rejection reason, or None when the
    file must decode (and, in a job, be kept)}."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = FACE.read_bytes()
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, reason: str | None) -> None:
        (folder / name).write_bytes(data)
        expected[name] = reason

    def save(name: str, img: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        put(name, buf.getvalue(), None)

    put("zero_bytes.jpg", b"", "empty_file")
    put("truncated.jpg", raw[: len(raw) // 3], "corrupt_image")
    put("text_file.jpg", b"this is not an image\n" * 10, "not_an_image")
    put("huge_header.png", huge_header_png(), "too_large")
    put("exif_rotated.jpg", exif_rotated_jpeg(rgb_of(PHOTOS["exif_rotated.jpg"])), None)
    alpha = Image.fromarray(rgb_of(PHOTOS["alpha.png"])).convert("RGBA")
    alpha.putalpha(Image.new("L", alpha.size, 200))
    save("alpha.png", alpha, "PNG")
    save("gray.jpg", Image.open(PHOTOS["gray.jpg"]).convert("L"), "JPEG", quality=95)
    save("cmyk.jpg", Image.open(PHOTOS["cmyk.jpg"]).convert("CMYK"), "JPEG", quality=95)
    gray = np.asarray(Image.open(PHOTOS["gray16.png"]).convert("L"), dtype=np.uint16)
    ok, png16 = cv2.imencode(".png", gray * 257)  # cv2 writes true 16-bit PNGs
    assert ok
    put("gray16.png", png16.tobytes(), None)
    put("name with spaces é ü 名字.jpg", raw, None)
    (folder / "dangling.jpg").symlink_to(folder / "does_not_exist.jpg")
    expected["dangling.jpg"] = "unreadable"
    (folder / "a_directory.jpg").mkdir()
    return expected
