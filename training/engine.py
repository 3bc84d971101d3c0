"""DeepSpeed wrapping, in one place: generator and discriminator become two engines.

Each engine gets its own config dict (a scheduler or optimizer declared in a shared dict
would apply to both) and a client-side ``torch.optim.Adam`` (a DeepSpeed-declared
optimizer would compile ``fused_adam`` at start-up).

This module also owns how the phases run an engine's forward passes
(``memory_format``, ``autocast``, ``compile`` of :class:`~training.config.EngineConfig`):
:func:`build_engine` puts the module in its memory format before wrapping and compiles it
after; :class:`Forward` is what the objectives call in the phases (``run_phases`` builds
one per engine with :func:`forward_of`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

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
    """Wrap ``module`` and its Adam (``opt``) in a DeepSpeed engine; returns the engine.

    ``memory_format: channels_last`` converts the module's 4-D weights after wrapping (in
    place: the parameters stay the same objects, which the optimizer holds); DeepSpeed's
    start-up broadcast views each weight as bytes and refuses NHWC strides, hence after.
    Only at ZeRO 0 with fp32 weights: ZeRO 1/2 and DeepSpeed's bf16/fp16 optimizers keep
    the weights as views of their flat buffers, and a converted copy would no longer
    receive the updates; there the weights stay as DeepSpeed holds them and only the inputs
    are NHWC (convolutions then pick the NHWC kernels from the input).

    ``compile`` calls ``engine.compile()`` (DeepSpeed 0.19: ``module.compile()`` in place
    with the accelerator's backend, inductor; parameter names and checkpoints unchanged; an
    EMA copy is not compiled, as torch drops the compiled call when copying a module). The
    engine carries its :class:`ForwardSettings` as ``engine.forward_settings``.
    """
    import deepspeed

    engine, *_ = deepspeed.initialize(
        model=module, optimizer=adam(module, opt), config=deepspeed_config(section, micro_batch)
    )
    if weights_channels_last(section):
        _weights_to_channels_last(engine.module)
    if section.compile:
        engine.compile()
    engine.forward_settings = ForwardSettings.of(section)
    return engine


def weights_channels_last(section: EngineConfig) -> bool:
    """True when :func:`build_engine` stores the weights NHWC (see there)."""
    return (
        section.memory_format == "channels_last"
        and section.zero_stage == 0
        and section.precision == "fp32"
    )


@dataclass(frozen=True)
class ForwardSettings:
    """How the phases run one engine's forward passes (from its :class:`EngineConfig`)."""

    memory_format: str = "contiguous"
    autocast: str = "none"
    compiled: bool = False

    @classmethod
    def of(cls, section: EngineConfig) -> ForwardSettings:
        return cls(section.memory_format, section.autocast, section.compile)


class Forward:
    """An engine (or ``engine.module``) as the objectives call it in the phases.

    Calling it calls ``target`` with its 4-D floating inputs in the engine's memory format,
    inside ``torch.autocast(device_type=<inputs' device>, dtype=bfloat16)`` when
    ``autocast: bf16``; the floating outputs (tensors, nested in tuples/lists/dicts) then come
    back as fp32, so every loss is computed in fp32 outside autocast (the identity encoder
    and other frozen helpers of the losses run in fp32 too). Any other attribute is
    ``target``'s (``.module``, ``.parameters()``), so an objective sees the interface it
    always had. Calls an objective makes on ``engine.module``'s methods directly (AEI-Net's
    ``attributes(swap)``, SimSwap's gradient penalty) run as plain fp32 calls.
    """

    def __init__(self, target: Any, settings: ForwardSettings):
        self.target, self.settings = target, settings

    def __call__(self, *args: Any) -> Any:
        if self.settings.memory_format == "channels_last":
            args = tuple(_channels_last(a) for a in args)
        if self.settings.autocast == "none":
            return self.target(*args)
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            out = self.target(*args)
        return _to_fp32(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def forward_of(engine: Any, target: Any = None) -> Forward:
    """:class:`Forward` of ``target`` (default: ``engine`` itself) with ``engine``'s settings;
    an engine built elsewhere (a benchmark's bare engine) runs plain."""
    settings = getattr(engine, "forward_settings", ForwardSettings())
    return Forward(engine if target is None else target, settings)


def eager_when_compiled(*engines: Any) -> contextlib.AbstractContextManager:
    """A context where compiled modules of ``engines`` run eagerly (for a phase that takes a
    double backward, e.g. a gradient penalty, which compiled graphs do not support)."""
    if any(getattr(e, "forward_settings", ForwardSettings()).compiled for e in engines):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def _weights_to_channels_last(module: nn.Module) -> None:
    """The 4-D parameters and buffers of ``module`` in NHWC, in place (the same tensor
    objects; ``Module.to(memory_format=...)`` would also take 5-D ones, e.g. StyleGAN2's
    modulated weights (1, O, I, k, k), and refuse them)."""
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)


def _channels_last(x: Any) -> Any:
    if torch.is_tensor(x) and x.dim() == 4 and x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _to_fp32(out: Any) -> Any:
    """``out`` with its bf16/fp16 tensors as fp32 (structure kept)."""
    if torch.is_tensor(out):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a named tuple
        return type(out)(*(_to_fp32(o) for o in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_fp32(v) for k, v in out.items()}
    return out


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze/unfreeze a network (D is frozen during the generator phase)."""
    for p in module.parameters():
        p.requires_grad_(flag)
