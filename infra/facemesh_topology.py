"""MediaPipe FaceMesh topology: the landmark index sets of the 468-point mesh that the
dataset's ``lmk468.npy`` files hold, and the face-oval mask every stage draws from them.

The index lists are the contours of MediaPipe's
``mediapipe/python/solutions/face_mesh_connections.py`` (``FACEMESH_FACE_OVAL``,
``FACEMESH_LEFT_EYE``/``RIGHT_EYE``, ``FACEMESH_LEFT_EYEBROW``/``RIGHT_EYEBROW``,
``FACEMESH_LIPS``, ``FACEMESH_NOSE``) ordered as polygons. MediaPipe's "left" is the
subject's left (image right of a frontal face). Prepare's geometric parser
(:mod:`preprocessing.parsing.facemesh_regions`), evaluation's blend masks and the training
face masks (Korshunova swapper) all read them from here.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Face outline, clockwise from the forehead top (``FACEMESH_FACE_OVAL``).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
             103, 67, 109]  # fmt: skip

#: Subject's left eye opening (``FACEMESH_LEFT_EYE``): lower lid 263→362, upper lid back.
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
#: Subject's right eye opening (``FACEMESH_RIGHT_EYE``).
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]

#: Subject's left eyebrow (``FACEMESH_LEFT_EYEBROW``): upper edge outward, lower edge back.
LEFT_BROW = [336, 296, 334, 293, 300, 276, 283, 282, 295, 285]
#: Subject's right eyebrow (``FACEMESH_RIGHT_EYEBROW``).
RIGHT_BROW = [107, 66, 105, 63, 70, 46, 53, 52, 65, 55]

#: Outer lip contour, upper half from corner 61 to corner 291 (``FACEMESH_LIPS``).
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
#: Outer lip contour, lower half from 61 to 291.
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
#: Inner lip contour, upper half from inner corner 78 to 308.
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
#: Inner lip contour, lower half from 78 to 308.
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]

#: Nose: the points of ``FACEMESH_NOSE`` (bridge 168→4, tip, columella, alae) plus the sides
#: of the bridge and of the nostrils; the region is their convex hull.
NOSE = [168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 294, 278, 344, 440, 275,
        45, 220, 115, 48, 64, 122, 351, 245, 465, 188, 412, 114, 343, 129, 358, 49, 279,
        131, 360, 102, 331]  # fmt: skip


def face_oval_mask(landmarks468: np.ndarray, size: int, shift: int = 4) -> np.ndarray:
    """Face mask filling the FaceMesh face oval.

    Parameters
    ----------
    landmarks468 : (468, 2 or 3) FaceMesh landmarks in pixels of a ``size`` × ``size``
        raster (``z`` ignored).
    size : raster side ``S`` in pixels.
    shift : fractional bits of the polygon vertices passed to ``cv2.fillPoly``.

    Returns
    -------
    (S, S) float32, 1 inside the polygon of :data:`FACE_OVAL` (36 points), 0 outside.

    Raises
    ------
    ValueError : landmarks not (468, 2+) or ``size`` < 1.
    """
    pts = np.asarray(landmarks468, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 468 or pts.shape[1] < 2:
        raise ValueError(f"expected (468, 2 or 3) FaceMesh landmarks, got {pts.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    mask = np.zeros((size, size), np.uint8)
    poly = np.round(pts[list(FACE_OVAL), :2] * (1 << shift)).astype(np.int32)[None]
    cv2.fillPoly(mask, poly, 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(np.float32)
