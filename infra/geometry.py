"""Geometry and value-range helpers every stage shares, defined once.

* 2×3 affine matrices: :func:`compose_affine`, :func:`invert_affine`, :func:`transform_points`
  (alignment writes them, evaluation and blending invert them to paste a swap back);
* :func:`l2_normalize` for identity embeddings (numpy);
* :func:`uint8_to_unit` / :func:`unit_to_uint8`: images between uint8 RGB and the
  generators' (B, 3, H, W) float range [-1, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2×3 affine ``outer ∘ inner`` (``inner`` applied first); both (2, 3), returns float64."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, float64 (to paste an aligned crop back)."""
    return cv2.invertAffineTransform(np.asarray(M, dtype=np.float64))


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points; returns (N, 2) float64."""
    points = np.asarray(points, dtype=np.float64)
    return points @ M[:, :2].T + M[:, 2]


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x / max(‖x‖₂, eps)`` along ``axis`` (rows of an (N, D) embedding matrix by default)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 RGB → (3, H, W) / (B, 3, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.permute(2, 0, 1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1


def unit_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [-1, 1] (clamped) → (B, H, W, 3) uint8 RGB numpy array."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def resize_crops(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 square crops → (N, size, size, 3) uint8 (area down, bilinear up; the
    input itself when already ``size``)."""
    if images.shape[1] == size:
        return images
    interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def resize_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) float tensor → (B, C, side, side): area averaging down (an average pool,
    as pSp's ``face_pool``), bilinear up, unchanged at the same size."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    if x.shape[-1] > side:
        return torch.nn.functional.adaptive_avg_pool2d(x, side)
    return torch.nn.functional.interpolate(
        x, size=(side, side), mode="bilinear", align_corners=False
    )
