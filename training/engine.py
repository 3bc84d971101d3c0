"""DeepSpeed wrapping, in one place: generator and discriminator become two engines.

Each engine gets its own config dict (a scheduler or optimizer declared in a shared dict
would apply to both) and a client-side ``torch.optim.Adam`` (a DeepSpeed-declared
optimizer would compile ``fused_adam`` at start-up).
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import EngineConfig
from training.swappers.base import AdamConfig


def deepspeed_config(section: EngineConfig, micro_batch: int) -> dict:
    """A fresh DeepSpeed config dict for one engine."""
    cfg: dict = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": section.grad_accum,
        "zero_optimization": {"stage": section.zero_stage},
        # torch's Adam is fine under ZeRO 1/2; DeepSpeed asks for this acknowledgement.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if section.grad_clip > 0:
        cfg["gradient_clipping"] = section.grad_clip
    if section.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif section.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return cfg


def adam(module: nn.Module, cfg: AdamConfig) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``module``'s trainable parameters (a frozen prior inside a
    generator, e.g. StyleGAN2, is left out) with the swapper's settings."""
    return torch.optim.Adam(
        [p for p in module.parameters() if p.requires_grad],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


def build_engine(module: nn.Module, section: EngineConfig, opt: AdamConfig, micro_batch: int):
    """Wrap ``module`` and its Adam (``opt``) in a DeepSpeed engine; returns the engine."""
    import deepspeed

    engine, *_ = deepspeed.initialize(
        model=module, optimizer=adam(module, opt), config=deepspeed_config(section, micro_batch)
    )
    return engine


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze/unfreeze a network (D is frozen during the generator phase)."""
    for p in module.parameters():
        p.requires_grad_(flag)
