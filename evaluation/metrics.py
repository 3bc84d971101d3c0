"""Metric functions with known answers (pure numpy, tested on hand-made inputs)."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of (N, D) scaled to unit L2 norm."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays → (N,) in [-1, 1]."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return (l2_normalize(a) * l2_normalize(b)).sum(1)


def top1_retrieval(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Index of the most similar gallery row for each query (cosine).

    queries (N, D), gallery (G, D) → (N,) gallery indices; ``labels`` must have G entries
    and is only validated here (callers compare ``labels[result]`` with the truth).
    """
    if gallery.shape[0] != len(labels):
        raise ValueError("one label per gallery row needed")
    sims = l2_normalize(queries) @ l2_normalize(gallery).T
    return sims.argmax(1)


def mse_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean squared error and PSNR (dB) between images scaled to [0, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return mse, psnr
