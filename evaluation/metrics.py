"""Metric functions with known answers (pure numpy, tested on hand-made inputs).

Embeddings are L2-normalised in float64 with :func:`infra.geometry.l2_normalize` before any
cosine, whatever the encoder already did.
"""

from __future__ import annotations

import numpy as np

from infra.geometry import l2_normalize


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity.

    Parameters
    ----------
    a, b : (N, D) embeddings, any float dtype (need not be normalised).

    Returns
    -------
    (N,) float64 in [-1, 1].

    Raises
    ------
    ValueError : the shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (l2_normalize(a) * l2_normalize(b)).sum(1)


def top1_retrieval(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Index of the most similar gallery row for each query (cosine).

    Parameters
    ----------
    queries : (N, D) embeddings.
    gallery : (G, D) embeddings.
    labels : (G,) gallery labels; only validated here (callers compare ``labels[result]``
        with the truth).

    Returns
    -------
    (N,) int64 gallery indices (the first one on ties).

    Raises
    ------
    ValueError : ``labels`` does not have G entries.
    """
    if gallery.shape[0] != len(labels):
        raise ValueError("one label per gallery row needed")
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    sims = l2_normalize(q) @ l2_normalize(g).T  # (N, G)
    return sims.argmax(1)


def mse_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean squared error and PSNR between two image sets.

    Parameters
    ----------
    a, b : arrays of one shape with values in [0, 1] (e.g. uint8 images / 255).

    Returns
    -------
    (mse, psnr_db) : ``psnr_db = 10 log10(1 / mse)``, ``inf`` when the images are equal.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return mse, psnr
