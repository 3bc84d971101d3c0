"""The engines' forward settings (``memory_format``, ``autocast``, ``compile``) through real
DeepSpeed engines on the CPU: one ``run_phases`` step of a tiny SimSwap (G, D and its
gradient-penalty Dreg) per setting, compared with the fp32 contiguous eager step."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from infra import distributed as dist
from training.config import EngineConfig, TrainConfig
from training.engine import build_engine, forward_of
from training.registry import build_discriminator, build_generator
from training.train import run_phases

from .test_objectives import ID_DIM, TINY, _batch, _objective

MODEL = "simswap"

#: bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 0.002 per op); through the tiny
#: generator's few layers the swap stays within 0.05 of fp32 (values in [-1, 1]).
BF16_ATOL = 0.05


def _step(**engine: object) -> dict:
    """One step (Gmain, Dmain, Dreg) from seed 0 with ``engine`` settings on both engines;
    returns the statistics, the swap of a fresh G forward before the step, and the
    engines."""
    dist.init_distributed()
    section = EngineConfig(**engine)
    cfg = TrainConfig.model_validate(
        {"model": MODEL, MODEL: {"debug": TINY[MODEL]}, "batch_size": 2}
    )
    torch.manual_seed(0)
    g_net, d_net = build_generator(cfg, ID_DIM), build_discriminator(cfg)
    adam = cfg.section.optimizer
    g = build_engine(g_net, section, adam.generator, 2)
    d = build_engine(d_net, section, adam.discriminator, 2)
    b = _batch(cfg.arch.image_size)
    with torch.no_grad():
        swap, _ = forward_of(g)(b.target, b.z_id)
    torch.manual_seed(1)
    stats, _, bad = run_phases(_objective(MODEL, cfg), g, d, b, step=1, d_reg_every=1)
    assert bad == []
    return {"stats": stats, "swap": swap, "g": g, "d": d}


@pytest.fixture(scope="module")
def eager() -> dict:
    return _step()


def test_channels_last_step_matches_contiguous(eager):
    cl = _step(memory_format="channels_last")
    convs = [p for p in cl["g"].module.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)  # really NHWC, not only 1x1 kernels
    for k in ("Loss/G/total", "Loss/D/total", "Loss/D/gp"):
        assert cl["stats"][k] == pytest.approx(eager["stats"][k], rel=1e-4, abs=1e-5), k
    torch.testing.assert_close(cl["swap"], eager["swap"], rtol=1e-4, atol=1e-5)
    # (the updated weights are not compared: Adam's first step is lr·sign(g), so a gradient
    # near 0 that rounds to the other sign moves a weight by 2·lr)


def test_bf16_autocast_step_keeps_fp32_weights_and_is_close_to_fp32(eager):
    bf = _step(autocast="bf16")
    assert bf["swap"].dtype == torch.float32  # outputs back in fp32 for the losses
    assert all(p.dtype == torch.float32 for p in bf["g"].module.parameters())
    assert all(p.dtype == torch.float32 for p in bf["d"].module.parameters())
    gap = (bf["swap"] - eager["swap"]).abs().max().item()
    assert 0 < gap < BF16_ATOL  # bf16 really ran (not bit-identical), and stayed close
    for k in ("Loss/G/total", "Loss/D/total"):
        assert bf["stats"][k] == pytest.approx(eager["stats"][k], rel=0.05, abs=0.02), k


def test_forward_casts_autocast_outputs_back_to_fp32():
    from training.engine import Forward, ForwardSettings

    lin = torch.nn.Linear(4, 4)
    out = Forward(lambda x: {"y": [lin(x)]}, ForwardSettings(autocast="bf16"))(torch.ones(2, 4))
    assert out["y"][0].dtype == torch.float32
    raw = torch.autocast("cpu", dtype=torch.bfloat16)
    with raw:
        assert lin(torch.ones(2, 4)).dtype == torch.bfloat16  # what autocast alone gives


@pytest.mark.slow
def test_compiled_step_matches_eager(eager):
    comp = _step(compile=True)
    assert comp["g"].module._compiled_call_impl is not None
    torch.testing.assert_close(comp["swap"], eager["swap"], rtol=1e-4, atol=1e-4)
    for k in ("Loss/G/total", "Loss/D/total", "Loss/D/gp"):
        assert comp["stats"][k] == pytest.approx(eager["stats"][k], rel=1e-3, abs=1e-4), k


@pytest.mark.parametrize(
    ("engine", "match"),
    [
        ({"autocast": "bf16", "precision": "fp16"}, "autocast: bf16 with precision: fp16"),
        ({"memory_format": "nhwc"}, "memory_format"),
        ({"autocast": "fp16"}, "autocast"),
    ],
)
def test_bad_engine_settings_are_refused(engine, match):
    with pytest.raises(ValidationError, match=match):
        TrainConfig.model_validate({"generator": engine})


def test_defaults_keep_fp32_contiguous_eager():
    cfg = TrainConfig()
    for e in (cfg.generator, cfg.discriminator):
        assert (e.memory_format, e.autocast, e.compile) == ("contiguous", "none", False)


def test_channels_last_leaves_5d_weights_alone():
    """StyleGAN2-style modulated weights (1, O, I, k, k) beside a conv: only the conv's
    weight becomes NHWC (``Module.to(memory_format=channels_last)`` refuses the 5-D one)."""
    dist.init_distributed()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    net.register_parameter("modulated", torch.nn.Parameter(torch.randn(1, 4, 3, 3, 3)))
    cfg = TrainConfig().section.optimizer.generator
    e = build_engine(net, EngineConfig(memory_format="channels_last"), cfg, 2)
    assert e.module[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not e.module[0].weight.is_contiguous()
    assert e.module.modulated.is_contiguous() and e.module.modulated.dim() == 5
