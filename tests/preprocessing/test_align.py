import cv2
import numpy as np
import pytest

from infra.geometry import invert_affine, transform_points
from preprocessing.align import (
    ARCFACE_112,
    align_face,
    similarity_transform,
    template_points,
)


def _similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    R = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([R, [[tx], [ty]]])


def test_template_scales_uniformly():
    pts = template_points("arcface", 256)
    np.testing.assert_allclose(pts, ARCFACE_112 * 256 / 112)


def test_recovers_known_transform():
    # Landmarks in an image = template mapped by a known similarity; alignment must invert it.
    known = _similarity(0.6, 17.0, 40.0, -12.0)
    image_pts = transform_points(template_points("arcface", 256), known)
    M = similarity_transform(image_pts, template_points("arcface", 256))
    np.testing.assert_allclose(M, invert_affine(known), atol=1e-9)
    np.testing.assert_allclose(
        transform_points(image_pts, M), template_points("arcface", 256), atol=1e-9
    )


def test_least_squares_with_noise_is_close():
    rng = np.random.default_rng(0)
    known = _similarity(1.7, -8.0, 5.0, 9.0)
    src = ARCFACE_112 + rng.normal(0, 0.5, ARCFACE_112.shape)
    M = similarity_transform(src, transform_points(src, known))
    np.testing.assert_allclose(M, known, atol=1e-9)


def test_crop_puts_landmarks_on_template():
    # Draw five bright dots at known landmark positions, align, find the dots in the crop.
    known = _similarity(2.0, -25.0, 60.0, 80.0)
    landmarks = transform_points(ARCFACE_112, known)
    image = np.zeros((500, 500, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop, _ = align_face(image, landmarks, 224)
    assert crop.shape == (224, 224, 3)
    centroids = cv2.connectedComponentsWithStats((crop[..., 0] > 100).astype(np.uint8))[3][1:]
    found = np.array(sorted(centroids, key=lambda p: (p[1] // 20, p[0])))
    expected = template_points("arcface", 224)
    expected = expected[np.lexsort((expected[:, 0], expected[:, 1] // 20))]
    assert len(found) == 5
    np.testing.assert_allclose(found, expected, atol=1.0)


def test_invalid_points_raise():
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), ARCFACE_112)
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 3)), np.zeros((5, 3)))
