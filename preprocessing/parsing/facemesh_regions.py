"""Geometric face parser: CelebAMask-HQ regions rasterised from 468 FaceMesh landmarks.

No weights: polygons over MediaPipe's canonical face-mesh indices (the contours of
``mediapipe/python/solutions/face_mesh_connections.py``, held by
:mod:`infra.facemesh_topology`) are filled with ``cv2.fillPoly``. MediaPipe's "left"
is the subject's left (image right of a frontal face), as is CelebAMask-HQ's, so
``FACEMESH_LEFT_EYE`` paints class 4 (left eye); checked against the CelebAMask-HQ masks.

Only face-interior classes can be produced: skin 1, nose 2, eyes 4/5, brows 6/7, mouth 10,
lips 11/12. Hair, ears, neck, glasses, etc. stay background.
"""

from __future__ import annotations

import cv2
import numpy as np

from infra.facemesh_topology import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    NOSE,
    RIGHT_BROW,
    RIGHT_EYE,
)
from preprocessing.parsing.base import check_faces

#: Classes this backend paints.
CLASSES: tuple[int, ...] = (0, 1, 2, 4, 5, 6, 7, 10, 11, 12)

# Corrections of the raw contours towards CelebAMask-HQ's annotation style, each chosen on
# the last 100 images of the CelebAMask-HQ set in ../shared (face-interior mIoU 0.561 →
# 0.575): FaceMesh's eye contour includes some eyelid (area 1.25× the annotation), its face
# oval stops below the hairline, and its inner-lip contour gives the mouth 1.4× its area.

#: Eye polygons are scaled by this factor about their centroid.
EYE_SCALE = 0.9
#: Face-oval points above the eye line are moved up by this fraction of their height above it.
FOREHEAD_LIFT = 0.3
#: The mouth-interior polygon is scaled by this factor perpendicular to the eye line.
MOUTH_OPENING_SCALE = 0.8


def _scale_about_centroid(poly: np.ndarray, along: float, across: float, axis: np.ndarray):
    """Scale a polygon about its centroid: ``along`` on unit vector ``axis``, ``across``
    perpendicular to it."""
    c = poly.mean(0)
    d = poly - c
    normal = np.array([-axis[1], axis[0]])
    return c + np.outer(d @ axis * along, axis) + np.outer(d @ normal * across, normal)


def region_polygons(landmarks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Polygons of one face in painting order (later ones overwrite earlier ones).

    Parameters
    ----------
    landmarks : (468, 2 or 3) FaceMesh landmarks in pixels of the target raster.

    Returns
    -------
    List of ``(class_id, (K, 2) float64 polygon)``: skin, nose, brows, eyes, upper lip,
    lower lip, mouth interior.

    Raises
    ------
    ValueError : ``landmarks`` is not (468, 2+).
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 468 or pts.shape[1] < 2:
        raise ValueError(f"expected (468, 2 or 3) landmarks, got {pts.shape}")
    xy = pts[:, :2]
    left_eye, right_eye = xy[LEFT_EYE], xy[RIGHT_EYE]
    eye_mid = (left_eye.mean(0) + right_eye.mean(0)) / 2
    across = left_eye.mean(0) - right_eye.mean(0)  # image right for a frontal face
    across /= max(np.hypot(*across), 1e-9)
    up = np.array([across[1], -across[0]])  # towards the forehead (image y points down)
    oval = xy[FACE_OVAL]
    height = np.clip((oval - eye_mid) @ up, 0, None)
    oval = oval + np.outer(height * FOREHEAD_LIFT, up)
    nose = cv2.convexHull(xy[NOSE].astype(np.float32))[:, 0].astype(np.float64)
    inner_upper, inner_lower = xy[LIPS_INNER_UPPER], xy[LIPS_INNER_LOWER]
    opening = np.concatenate([inner_upper, inner_lower[::-1]])
    return [
        (1, oval),
        (2, nose),
        (6, xy[LEFT_BROW]),
        (7, xy[RIGHT_BROW]),
        (4, _scale_about_centroid(left_eye, EYE_SCALE, EYE_SCALE, across)),
        (5, _scale_about_centroid(right_eye, EYE_SCALE, EYE_SCALE, across)),
        (11, np.concatenate([xy[LIPS_OUTER_UPPER], inner_upper[::-1]])),
        (12, np.concatenate([xy[LIPS_OUTER_LOWER], inner_lower[::-1]])),
        (10, _scale_about_centroid(opening, 1.0, MOUTH_OPENING_SCALE, across)),
    ]


def rasterise(landmarks: np.ndarray, size: int, shift: int = 4) -> np.ndarray:
    """Label map of one face.

    Parameters
    ----------
    landmarks : (468, 2 or 3) landmarks in pixels of a ``size`` × ``size`` raster.
    size : raster side in pixels.
    shift : fractional bits of the polygon vertices passed to ``cv2.fillPoly``.

    Returns
    -------
    (size, size) uint8 CelebAMask-HQ class ids (0 outside the face oval).
    """
    label = np.zeros((size, size), np.uint8)
    scale = float(1 << shift)
    for class_id, poly in region_polygons(landmarks):
        vertices = np.round(poly * scale).astype(np.int32)[None]
        cv2.fillPoly(label, vertices, int(class_id), lineType=cv2.LINE_8, shift=shift)
    return label


class FaceMeshRegionsBackend:
    """:class:`~preprocessing.parsing.base.MaskBackend` painting FaceMesh polygons.

    Parameters
    ----------
    crop_size : side of the crops (any size works; the label map matches the crop).
    """

    name = "facemesh"
    crop_template = "ffhq"
    classes = CLASSES
    needs_landmarks = True

    def __init__(self, crop_size: int = 512):
        self.crop_size = int(crop_size)

    def parse(self, faces: np.ndarray, landmarks468: np.ndarray | None = None) -> np.ndarray:
        """Label maps from landmarks (the pixels are only used for their shape).

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB crops.
        landmarks468 : (N, 468, 3) float FaceMesh landmarks in crop pixels (required).

        Returns
        -------
        (N, S, S) uint8 class ids in :data:`CLASSES`.

        Raises
        ------
        ValueError : crops malformed, or landmarks missing or not (N, 468, 2+).
        """
        faces = check_faces(faces)
        if landmarks468 is None:
            raise ValueError("the facemesh backend needs landmarks468 (N, 468, 3) in crop pixels")
        lms = np.asarray(landmarks468)
        if lms.ndim != 3 or lms.shape[:2] != (len(faces), 468) or lms.shape[2] < 2:
            raise ValueError(f"expected ({len(faces)}, 468, 3) landmarks, got {lms.shape}")
        size = faces.shape[1]
        if len(faces) == 0:
            return np.zeros((0, size, size), np.uint8)
        return np.stack([rasterise(lm, size) for lm in lms])
