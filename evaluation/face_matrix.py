"""Source × target face matrix (as in Facke Fig. 4, seed 002)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def face_matrix(
    sources: np.ndarray, targets: np.ndarray, swaps: np.ndarray, cell: int
) -> np.ndarray:
    """Compose the matrix image.

    Parameters
    ----------
    sources : (N, H, W, 3) uint8 RGB, drawn along the top row.
    targets : (M, H, W, 3) uint8 RGB, drawn down the left column.
    swaps : (M, N, H, W, 3) uint8 RGB; ``swaps[t, s]`` = identity of source s on target t.
    cell : side of a cell in pixels.

    Returns
    -------
    ((M + 1) * cell, (N + 1) * cell, 3) uint8 RGB; the top-left cell is blank.
    """
    M, N = swaps.shape[:2]
    if len(sources) != N or len(targets) != M:
        raise ValueError(
            f"swaps {swaps.shape[:2]} do not match {len(targets)} targets × {len(sources)} sources"
        )

    def fit(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA)

    canvas = np.full(((M + 1) * cell, (N + 1) * cell, 3), 255, np.uint8)
    for s in range(N):
        canvas[:cell, (s + 1) * cell : (s + 2) * cell] = fit(sources[s])
    for t in range(M):
        canvas[(t + 1) * cell : (t + 2) * cell, :cell] = fit(targets[t])
        for s in range(N):
            canvas[(t + 1) * cell : (t + 2) * cell, (s + 1) * cell : (s + 2) * cell] = fit(
                swaps[t, s]
            )
    return canvas


def save_png(rgb: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1])
    return path
