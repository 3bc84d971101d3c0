"""Builds a swapper's networks and objective from the config, and saves/loads its
generator as a plain checkpoint that evaluation loads without DeepSpeed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from infra.models import ModelStore
from preprocessing.dataset_card import DatasetCard
from training.config import TrainConfig
from training.helpers import EyeLandmarks, identity_encoder_for
from training.networks.aei_net import AEINet, AEINetConfig
from training.networks.discriminator import DiscriminatorConfig, MultiscaleDiscriminator
from training.networks.simswap import SimSwapConfig, SimSwapGenerator
from training.objectives import FaceShifterObjective, GhostObjective, SimSwapObjective

#: model name → (generator class, its config dataclass)
GENERATORS = {
    "aei_net": (AEINet, AEINetConfig),
    "ghost": (AEINet, AEINetConfig),
    "simswap": (SimSwapGenerator, SimSwapConfig),
}


def build_generator(cfg: TrainConfig, id_dim: int) -> nn.Module:
    """The chosen model's generator at the chosen width; ``id_dim`` from the dataset card."""
    a = cfg.arch
    if cfg.model in ("aei_net", "ghost"):
        return AEINet(
            AEINetConfig(
                image_size=a.image_size,
                id_dim=id_dim,
                base_channels=a.base_channels,
                max_channels=a.max_channels,
                aad_units=a.aad_units,
            )
        )
    return SimSwapGenerator(
        SimSwapConfig(
            image_size=a.image_size,
            id_dim=id_dim,
            base_channels=a.base_channels,
            max_channels=a.max_channels,
            num_down=a.num_down,
            id_blocks=a.id_blocks,
        )
    )


def build_discriminator(cfg: TrainConfig) -> MultiscaleDiscriminator:
    return MultiscaleDiscriminator(DiscriminatorConfig(**cfg.arch.discriminator.model_dump()))


def build_objective(cfg: TrainConfig, card: DatasetCard, store: ModelStore):
    """The objective with its frozen helpers (identity encoder, eye landmarks), built once."""
    id_encoder = identity_encoder_for(card, store)
    if cfg.model == "aei_net":
        return FaceShifterObjective(id_encoder, cfg.aei_net.weights)
    if cfg.model == "ghost":
        g = cfg.ghost
        return GhostObjective(
            id_encoder,
            EyeLandmarks(store, g.landmark_model),
            g.weights,
            g.heatmap_size,
            g.heatmap_sigma,
        )
    return SimSwapObjective(id_encoder, cfg.simswap.weights)


def export_generator(model_name: str, module: nn.Module, path: Path, meta: dict) -> Path:
    """Save ``{"model", "arch", "state_dict", "meta"}`` (fp32, CPU) for evaluation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
    torch.save(
        {"model": model_name, "arch": asdict(module.cfg), "state_dict": state, "meta": meta}, path
    )
    return path


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load an exported generator in eval mode; returns (module, meta). Forward signature:
    ``module(target (B, 3, S, S), z_id (B, D)) -> (swap, extras)``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage first")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    cls, arch = GENERATORS[ckpt.get("model", "aei_net")]
    module = cls(arch(**ckpt["arch"]))
    module.load_state_dict(ckpt["state_dict"])
    return module.to(device).eval(), ckpt["meta"]
