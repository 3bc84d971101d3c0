"""Paste-back blending (GHOST §III.C): masks, landmark-driven mask change, inverse warp."""

import cv2
import numpy as np
import pytest

from evaluation.blend import (
    BASE_BLUR,
    FACE_CLASSES,
    SIDE_IMAGE_LEFT,
    SIDE_IMAGE_RIGHT,
    adjust_mask,
    face_mask_from_labels,
    face_mask_from_landmarks,
    paste_back,
    paste_back_poisson,
    width_change,
)
from infra.geometry import invert_affine, transform_points
from infra.models import ModelStore
from preprocessing.align import align_face
from preprocessing.config import DetectionConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from preprocessing.facemesh import FaceMesh
from preprocessing.parsing.facemesh_regions import FACE_OVAL

from ..conftest import FACES

LFW = FACES / "lfw_subset_krasserm"
CROP = 256


def _face(detector, facemesh, name):
    rgb = load_image(LFW / name / f"{name}_0001.jpg", 10**8).image
    found = detector.detect(rgb)
    crop, M = align_face(rgb, found.landmarks[0], CROP)
    mesh = facemesh.predict(rgb, found.boxes[0])
    return {"frame": rgb, "crop": crop, "M": M, "lmk": transform_points(mesh[:, :2], M)}


@pytest.fixture(scope="module")
def faces(models_dir):
    """Two real LFW faces: frame, aligned 256 crop, image→crop matrix, crop landmarks."""
    store = ModelStore(models_dir)
    detector = FaceDetector(store.path("scrfd_2.5g_bnkps"), DetectionConfig())
    facemesh = FaceMesh(store, threads=2)
    return [_face(detector, facemesh, n) for n in ("George_W_Bush", "Hugo_Chavez")]


def _footprint(frame_shape, M, size, erode=0):
    """Frame pixels covered by the warped crop (optionally eroded), bool (H, W)."""
    ones = np.full((size, size), 255, np.uint8)
    h, w = frame_shape[:2]
    warped = cv2.warpAffine(ones, invert_affine(M), (w, h), flags=cv2.INTER_NEAREST)
    if erode:
        warped = cv2.erode(warped, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return warped > 0


def _x_extent(mask):
    cols = np.flatnonzero(mask.max(0) > 0.5)
    return cols[-1] - cols[0] + 1


def test_label_mask_keeps_exactly_the_face_classes():
    labels = np.tile(np.arange(19, dtype=np.uint8), (4, 1))  # column k holds class k
    mask = face_mask_from_labels(labels)
    assert mask.dtype == np.float32 and mask.shape == labels.shape
    assert sorted(np.flatnonzero(mask[0])) == [1, 2, 4, 5, 6, 7, 10, 11, 12]
    assert FACE_CLASSES == (1, 2, 4, 5, 6, 7, 10, 11, 12)
    with pytest.raises(ValueError):
        face_mask_from_labels(np.zeros((2, 2, 2), np.uint8))


def test_zero_mask_returns_the_frame_exactly(faces):
    target, other = faces
    out = paste_back(target["frame"], other["crop"], target["M"], np.zeros((CROP, CROP)), 6.0)
    assert out.dtype == np.uint8 and np.array_equal(out, target["frame"])


def test_own_crop_with_full_mask_reproduces_the_frame(faces):
    target, other = faces
    frame, M = target["frame"], target["M"]
    ones = np.ones((CROP, CROP), np.float32)
    out = paste_back(frame, target["crop"], M, ones, 0.0)
    inside = _footprint(frame.shape, M, CROP, erode=2)
    diff = np.abs(out.astype(np.int16) - frame.astype(np.int16))
    # Only the two bilinear resamplings (frame → crop → frame) separate them.
    assert diff[inside].mean() < 2.0, diff[inside].mean()
    assert np.percentile(diff[inside], 99) <= 12
    outside = ~_footprint(frame.shape, M, CROP)
    outside = cv2.erode(outside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert outside.any() and np.array_equal(out[outside], frame[outside])
    # Control: another person's crop changes the same region a lot.
    swapped = paste_back(frame, other["crop"], M, ones, 0.0)
    assert np.abs(swapped.astype(np.int16) - frame)[inside].mean() > 15


def test_constant_swap_lands_where_the_crop_centre_maps():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    a, s = np.deg2rad(20.0), 0.8  # image → crop: scale 0.8, rotation 20°, frame (210, 140)
    sR = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])  # → crop centre
    M = np.hstack([sR, (np.array([64.0, 64.0]) - sR @ [210.0, 140.0])[:, None]])
    size, radius = 128, 30
    swap = np.empty((size, size, 3), np.uint8)
    swap[:] = (200, 30, 60)
    mask = np.zeros((size, size), np.float32)
    cv2.circle(mask, (64, 64), radius, 1.0, -1)
    out = paste_back(frame, swap, M, mask, 0.0)
    centre = transform_points(np.array([[64.0, 64.0]]), invert_affine(M))[0]
    np.testing.assert_allclose(centre, [210.0, 140.0], atol=1e-9)
    cx, cy = 210, 140
    assert tuple(out[cy, cx]) == (200, 30, 60)
    changed = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(changed)
    np.testing.assert_allclose([xs.mean(), ys.mean()], centre, atol=1.0)
    # The disc of radius 30 crop px is a disc of radius 30 / 0.8 frame px.
    assert abs(changed.sum() / (np.pi * (radius / s) ** 2) - 1) < 0.05
    far = np.hypot(*(np.mgrid[0:300, 0:400][::-1] - centre[:, None, None])) > radius / s + 2
    assert np.array_equal(out[far], frame[far])


def test_blurred_mask_is_soft_and_fades_before_the_crop_edge():
    frame = np.zeros((200, 200, 3), np.uint8)
    M = np.array([[1.0, 0, -36], [0, 1.0, -36]])  # crop = frame[36:164, 36:164]
    swap = np.full((128, 128, 3), 255, np.uint8)
    out = paste_back(frame, swap, M, np.ones((128, 128), np.float32), 4.0)[..., 0]
    assert out[100, 100] == 255  # centre: fully replaced
    assert out[35, 100] == 0  # outside the crop: untouched
    # Zeroed 3σ = 12 px from the crop border, then blurred: α ≤ Φ(−3) ≈ 0.001 at the edge
    # (without the fade the blurred all-ones mask would stay ≈ 1 there: a hard seam).
    assert out[36, 100] <= 1
    edge = out[36 : 36 + 30, 100].astype(int)  # rises smoothly inwards
    assert np.all(np.diff(edge) >= 0) and edge[-1] == 255


def test_landmark_mask_covers_the_facemesh_hull(faces):
    for face in faces:
        lmk = face["lmk"]
        mask = face_mask_from_landmarks(lmk, CROP)
        assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
        hull = np.zeros((CROP, CROP), np.uint8)
        cv2.fillConvexPoly(hull, np.round(cv2.convexHull(lmk.astype(np.float32))).astype(int), 1)
        hull = hull > 0
        # Measured: the oval fills 98.8–99.2 % of the hull of all 468 points; a few cheek
        # points (e.g. 137, 227, 447) lie up to 3.3 % of the face width outside the oval.
        assert mask[hull].mean() > 0.98
        assert mask.sum() < 1.01 * hull.sum()  # the oval is the mesh's outline, not larger
        oval = lmk[list(FACE_OVAL)].astype(np.float32)
        depth = np.array([cv2.pointPolygonTest(oval, (float(x), float(y)), True) for x, y in lmk])
        width = np.ptp(oval[:, 0])
        assert (depth > -0.5).mean() > 0.97 and depth.min() > -0.05 * width


def _spread_sides(lmk, left_px, right_px):
    """Move the image-left half of the face by ``-left_px`` and the right half by
    ``+right_px`` along x (positive = outward)."""
    out = lmk.copy()
    cx = lmk[list(SIDE_IMAGE_LEFT) + list(SIDE_IMAGE_RIGHT), 0].mean()
    out[lmk[:, 0] < cx, 0] -= left_px
    out[lmk[:, 0] >= cx, 0] += right_px
    return out


def test_adjust_mask_follows_the_face_width(faces):
    lmk = faces[0]["lmk"]
    mask = face_mask_from_landmarks(lmk, CROP)
    spread, width = width_change(lmk, lmk)
    assert spread == 0 and 60 < width < 200
    same, blur = adjust_mask(mask, lmk, lmk)
    assert np.array_equal(same, mask) and blur == pytest.approx(BASE_BLUR * width)

    wider = _spread_sides(lmk, 6.0, 6.0)
    assert width_change(wider, lmk)[0] == pytest.approx(6.0, abs=0.1)
    grown, blur_w = adjust_mask(mask, wider, lmk)
    assert grown.sum() > mask.sum() and np.all(grown >= mask)
    assert abs(_x_extent(grown) - _x_extent(mask) - 12) <= 1  # dilated by 6 px a side
    assert blur_w == pytest.approx(BASE_BLUR * width)

    narrower = _spread_sides(lmk, -6.0, -6.0)
    shrunk, blur_n = adjust_mask(mask, narrower, lmk)
    assert shrunk.sum() < mask.sum() and np.all(shrunk <= mask)
    expected = 2 * round(6.0 + BASE_BLUR * width)  # inward offset + one base blur width a side
    assert abs(_x_extent(mask) - _x_extent(shrunk) - expected) <= 1
    assert blur_n == pytest.approx(BASE_BLUR * width + 6.0, abs=0.1)

    # Wider on one side, narrower on the other: the narrower side decides (as in GHOST).
    lopsided = _spread_sides(lmk, 6.0, -3.0)
    assert width_change(lopsided, lmk)[0] == pytest.approx(-3.0, abs=0.1)
    assert adjust_mask(mask, lopsided, lmk)[0].sum() < mask.sum()


def test_real_swap_changes_only_the_face(faces):
    target, other = faces
    mask = face_mask_from_landmarks(target["lmk"], CROP)
    mask, blur = adjust_mask(mask, other["lmk"], target["lmk"])
    out = paste_back(target["frame"], other["crop"], target["M"], mask, blur)
    changed = np.any(out != target["frame"], axis=2)
    assert changed.sum() > 1000  # the face was replaced
    # Nothing changes outside the (dilated) face region warped into the frame.
    region = cv2.warpAffine(
        cv2.dilate(mask, np.ones((5, 5), np.uint8)),
        invert_affine(target["M"]),
        target["frame"].shape[1::-1],
    )
    region = cv2.dilate((region > 0).astype(np.uint8), np.ones((2 * int(3 * blur) + 3,) * 2))
    assert not changed[region == 0].any()


def _warped_region(mask, M, frame_shape):
    h, w = frame_shape[:2]
    region = (mask > 0.5).astype(np.uint8)
    return cv2.warpAffine(region, invert_affine(M), (w, h), flags=cv2.INTER_NEAREST) > 0


def test_poisson_blend_changes_only_the_face_and_keeps_the_swaps_texture(faces):
    target, other = faces
    frame, M = target["frame"], target["M"]
    mask = face_mask_from_landmarks(target["lmk"], CROP)
    out = paste_back_poisson(frame, other["crop"], M, mask)
    region = _warped_region(mask, M, frame.shape)
    changed = np.any(out != frame, axis=2)
    assert changed.sum() > 1000 and not changed[~region].any()
    # the same call again gives the same frame (OpenCV writes into its mask argument)
    assert np.array_equal(paste_back_poisson(frame, other["crop"], M, mask), out)
    # inside, the result has the swap's gradients, not the frame's
    warped = cv2.warpAffine(other["crop"], invert_affine(M), frame.shape[1::-1]).astype(float)
    inner = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    gx = lambda im: np.diff(im.astype(float).mean(2), axis=1)[inner[:, 1:]]  # noqa: E731
    assert np.abs(gx(out) - gx(warped)).mean() < 0.5 * np.abs(gx(frame) - gx(warped)).mean()


def test_poisson_blend_removes_a_brightness_offset_and_does_not_shift(faces):
    target, _ = faces
    frame, M = target["frame"], target["M"]
    mask = face_mask_from_landmarks(target["lmk"], CROP)
    region = _warped_region(mask, M, frame.shape)
    inner = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    brighter = np.clip(target["crop"].astype(int) + 40, 0, 255).astype(np.uint8)
    alpha = paste_back(frame, brighter, M, mask, 0.0)
    poisson = paste_back_poisson(frame, brighter, M, mask)
    err = lambda im: np.abs(im.astype(int) - frame)[inner].mean()  # noqa: E731
    assert err(alpha) > 25 and err(poisson) < 0.25 * err(alpha)
    # a step edge in the crop lands where the alpha paste puts it (no one-pixel shift)
    step = np.full((CROP, CROP, 3), 90, np.uint8)
    step[:, CROP // 2 :] = 200
    flat = np.full_like(frame, 90)
    a, p = paste_back(flat, step, M, mask, 0.0), paste_back_poisson(flat, step, M, mask)
    row = int(np.median(np.nonzero(inner)[0]))
    cols = np.nonzero(inner[row])[0]
    edge = lambda im: np.abs(np.diff(im[row, cols[0] : cols[-1], 0].astype(int))).argmax()  # noqa: E731
    assert edge(a) == edge(p)


def test_poisson_blend_with_an_empty_mask_or_bad_input():
    frame = np.zeros((50, 60, 3), np.uint8)
    swap = np.full((32, 32, 3), 200, np.uint8)
    M = np.array([[1.0, 0, 0], [0, 1, 0]])
    assert np.array_equal(paste_back_poisson(frame, swap, M, np.zeros((32, 32))), frame)
    with pytest.raises(ValueError, match="mask"):
        paste_back_poisson(frame, swap, M, np.zeros((16, 16)))
    with pytest.raises(ValueError, match="frame"):
        paste_back_poisson(frame[..., 0], swap, M, np.zeros((32, 32)))
