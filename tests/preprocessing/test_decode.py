"""Bad and awkward files decode to RGB or to a rejection reason, never an exception."""

import numpy as np
import pytest
from PIL import Image

from preprocessing.decode import decode_image, load_image
from tests.preprocessing.badfiles import PHOTOS, huge_header_png, make_bad_inputs, rgb_of


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, make_bad_inputs(folder)


def test_every_bad_file_gets_its_reason(bad):
    folder, expected = bad
    expected = {**expected, "a_directory.jpg": "unreadable"}
    for name, reason in expected.items():
        d = load_image(folder / name, max_pixels=40_000_000)
        assert d.reason == reason, (name, d.reason, d.detail)
        if reason is None:
            assert d.image.dtype == np.uint8 and d.image.ndim == 3 and d.image.shape[2] == 3, name
        else:
            assert d.image is None and d.detail


def test_huge_header_rejected_before_allocation(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pixels must not be loaded")

    monkeypatch.setattr(Image.Image, "load", boom)
    d = decode_image(huge_header_png(30000), max_pixels=40_000_000)
    assert d.reason == "too_large" and (d.width, d.height) == (30000, 30000)


def test_exif_orientation_applied(bad):
    folder, _ = bad
    upright = rgb_of(PHOTOS["exif_rotated.jpg"]).astype(np.float32)
    d = load_image(folder / "exif_rotated.jpg", 40_000_000)
    assert d.image.shape == upright.shape
    assert np.abs(d.image.astype(np.float32) - upright).mean() < 6  # JPEG noise only


def test_sixteen_bit_and_gray_and_cmyk_match_the_photo(bad):
    folder, _ = bad
    for name in ("gray16.png", "gray.jpg"):
        gray = np.asarray(Image.open(PHOTOS[name]).convert("L")).astype(np.float32)
        img = load_image(folder / name, 40_000_000).image.astype(np.float32)
        assert np.abs(img[..., 0] - gray).mean() < 3, name
        assert np.array_equal(img[..., 0], img[..., 2])
    rgb = rgb_of(PHOTOS["cmyk.jpg"]).astype(np.float32)
    cmyk = load_image(folder / "cmyk.jpg", 40_000_000).image.astype(np.float32)
    assert np.abs(cmyk - rgb).mean() < 12


def test_an_animated_gif_decodes_its_first_frame(tmp_path):
    import io

    first = rgb_of(PHOTOS[sorted(PHOTOS)[0]])[:64, :64]
    frames = [Image.fromarray(first), Image.fromarray(255 - first), Image.fromarray(first // 2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    with Image.open(io.BytesIO(buf.getvalue())) as gif:
        assert gif.n_frames == 3
        # GIF stores a 256-colour palette: compare with the first frame quantised alike
        want = np.asarray(gif.convert("RGB"))
    d = decode_image(buf.getvalue(), max_pixels=10**6)
    assert d.reason is None and d.image.shape == (64, 64, 3)
    assert np.array_equal(d.image, want)
    assert np.abs(d.image.astype(int) - first.astype(int)).mean() < 12  # not frame 2 or 3
