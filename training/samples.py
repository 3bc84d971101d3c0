"""Sample grids: rows of images (e.g. source, target, swap) as one PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from infra.geometry import unit_to_uint8


def save_grid(rows: list[torch.Tensor], path: Path, max_cols: int = 8) -> Path:
    """Write rows of images (each (B, 3, H, W) in [-1, 1]) as one PNG grid."""
    strips = [np.concatenate(list(unit_to_uint8(r[:max_cols])), axis=1) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(strips, axis=0)[..., ::-1])
    return path
