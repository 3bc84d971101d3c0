"""5-point similarity alignment to a face template.

Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth
corner (image left/right, as SCRFD and ArcFace use). Coordinates are ``(x, y)`` pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

#: ArcFace 112x112 template (insightface ``arcface_dst``), pixels.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

TEMPLATES = ("arcface", "ffhq")


def template_points(name: str, crop_size: int) -> np.ndarray:
    """ArcFace template landmarks for a square crop of ``crop_size`` pixels, (5, 2) float64.

    The template is scaled uniformly (``crop_size / 112``), so resizing an aligned crop of
    any size to 112x112 gives exactly the ArcFace input crop. Raises ``KeyError`` for a
    template without fixed points (``ffhq`` is defined by a quad, see :func:`ffhq_quad`).
    """
    if name != "arcface":
        raise KeyError(f"template {name!r} has no fixed landmark positions")
    return ARCFACE_112 * (crop_size / 112)


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (Karras et al. 2019, ``ffhq-dataset`` recipe) from 5 points.

    Eye centres are landmarks 0 and 1, the mouth corners 3 and 4. Returns (4, 2) corners
    top-left, bottom-left, bottom-right, top-right of a square (rotated with the face).
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_avg = (lm[0] + lm[1]) * 0.5
    eye_to_eye = lm[1] - lm[0]
    mouth_avg = (lm[3] + lm[4]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def estimate_transform(
    landmarks: np.ndarray, crop_size: int, template: str = "arcface"
) -> np.ndarray:
    """(2, 3) similarity mapping image pixels to a ``template`` crop of ``crop_size`` pixels.

    ``arcface``: least-squares fit of the 5 points to the scaled ArcFace template (tight
    face crop, as SimSwap/GHOST train on). ``ffhq``: the FFHQ quad mapped onto the crop
    corners (loose crop with hair and chin, as CelebA-HQ/FFHQ models expect).
    Raises ValueError for an unknown template.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if template == "arcface":
        return similarity_transform(lm, template_points("arcface", crop_size))
    if template == "ffhq":
        s = float(crop_size)
        corners = np.array([[0, 0], [0, s], [s, s], [s, 0]])
        return similarity_transform(ffhq_quad(lm), corners)
    raise ValueError(f"unknown template {template!r}; known: {TEMPLATES}")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` onto ``dst`` (Umeyama 1991).

    Parameters
    ----------
    src, dst : (N, 2) arrays of corresponding points, N ≥ 2.

    Returns
    -------
    (2, 3) float64 affine matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``,
    ``M[:, :2] = s R`` (uniform scale, rotation, no reflection).

    Raises
    ------
    ValueError : shapes differ, fewer than 2 points, or all source points coincide.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("source points coincide; the transform is undefined")
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1.0
    R = U @ D @ Vt
    scale = (S * np.diag(D)).sum() / var_s
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def align_face(
    image: np.ndarray, landmarks: np.ndarray, crop_size: int, template: str = "arcface"
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a face to the template.

    Parameters
    ----------
    image : (H, W, C) uint8 image (any channel order; it is kept).
    landmarks : (5, 2) landmark pixels in ``image``.
    crop_size : output side in pixels.
    template : ``arcface`` or ``ffhq`` (see :func:`estimate_transform`).

    Returns
    -------
    crop : (crop_size, crop_size, C) uint8, outside the image filled with 0.
    M : (2, 3) float64 matrix mapping image pixels to crop pixels.
    """
    M = estimate_transform(landmarks, crop_size, template)
    crop = cv2.warpAffine(
        image, M, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return crop, M
