"""Sample grids and the exported generator checkpoint."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

from training.networks.aei_net import AEINet, AEINetConfig


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


def export_generator(model: AEINet, path: Path, meta: dict) -> Path:
    """Save a plain state_dict checkpoint that evaluation loads without DeepSpeed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    torch.save({"arch": asdict(model.cfg), "state_dict": state, "meta": meta}, path)
    return path


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[AEINet, dict]:
    """Load an exported generator in eval mode; returns (model, meta)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage first")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = AEINet(AEINetConfig(**ckpt["arch"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt["meta"]
