"""Sample grids: rows of images (e.g. source, target, swap) as one PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8 RGB."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_grid(rows: list[torch.Tensor], path: Path, max_cols: int = 8) -> Path:
    """Write rows of images (each (B, 3, H, W) in [-1, 1]) as one PNG grid."""
    strips = [np.concatenate(list(to_uint8(r[:max_cols])), axis=1) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(strips, axis=0)[..., ::-1])
    return path
