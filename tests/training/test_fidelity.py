"""Swappers as their papers and releases build them: GHOST's AAD instance norm, bias-free
ResBlk convs, initialisation, discriminator and losses; SimSwap's batch-norm discriminator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.conftest import MODELS
from training.config import TrainConfig
from training.networks.aei_net import AADLayer, AEINet
from training.networks.discriminator import MultiscaleDiscriminator
from training.registry import build_discriminator
from training.swappers.base import hinge_discriminator

from .test_objectives import TINY, Engine, TinyEyes, TinyIdentity, _batch


def test_instance_norm_aad_treats_each_sample_alone():
    torch.manual_seed(0)
    h, z_att, z_id = torch.randn(4, 6, 5, 5), torch.randn(4, 3, 5, 5), torch.randn(4, 8)
    for norm, independent in (("instance", True), ("batch", False)):
        layer = AADLayer(6, 3, 8, norm).train()
        alone = layer(h[:1], z_att[:1], z_id[:1])
        together = layer(h, z_att, z_id)[:1]
        assert torch.allclose(alone, together, atol=1e-5) is independent, norm


def test_ghost_generator_as_released():
    cfg = TrainConfig.model_validate({"model": "ghost"})
    arch = cfg.ghost.paper
    assert (arch.aad_norm, arch.conv_bias, arch.init, arch.aad_units) == (
        "instance",
        False,
        "xavier",
        2,
    )
    torch.manual_seed(0)
    net = AEINet(cfg.ghost.debug, id_dim=128)
    blocks = list(net.generator.blocks)
    assert all(c.bias is None for b in blocks for c in b.conv)
    assert all(isinstance(a.norm, nn.InstanceNorm2d) for b in blocks for a in b.aad)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert all(m.bias.abs().max() == 0 for m in linears)
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert weights.std().item() == pytest.approx(1e-3, rel=0.05)
    conv = net.encoder.down[2][0]  # a 4x4 conv: Xavier-normal std = sqrt(2 / (fan_in + fan_out))
    fan_in, fan_out = conv.in_channels * 16, conv.out_channels * 16
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.1)
    # FaceShifter keeps batch-statistics AAD and PyTorch's initialisation
    aei = TrainConfig().aei_net.paper
    assert (aei.aad_norm, aei.conv_bias, aei.init) == ("batch", True, "pytorch")


def test_ghost_discriminator_as_released_runs_on_256_px():
    cfg = TrainConfig.model_validate({"model": "ghost", "width": "paper"})
    d = cfg.arch.discriminator
    assert (d.num_layers, d.norm, d.padding, d.num_scales) == (5, "instance", 2, 3)
    net = build_discriminator(cfg)
    out = net(torch.zeros(1, 3, 256, 256))
    assert len(out) == 3 and all(len(scale) == 5 + 2 for scale in out)
    assert all(f[-1].shape[1] == 1 and f[-1].shape[-1] >= 2 for f in out)


def test_ghost_losses_as_released():
    cfg = TrainConfig.model_validate({"model": "ghost", "ghost": {"debug": TINY["ghost"]}})
    assert cfg.ghost.weights.eye == 0.0  # released with the eye loss off
    from training.registry import build_generator
    from training.swappers.ghost import GhostObjective

    torch.manual_seed(0)
    G, D = build_generator(cfg, 8), build_discriminator(cfg)
    obj = GhostObjective(TinyIdentity(), TinyEyes(), cfg.ghost.weights, 16, 1.5)
    b = _batch(cfg.arch.image_size)
    b.same_identity[:] = True  # every pair same-person: the release still applies L_adv
    g, _ = obj.generator_loss(Engine(G), D, b)
    assert g.stats["Loss/G/adv"].item() > 0


def test_eye_landmarks_give_the_eye_centres():
    from infra.models import ModelStore
    from training.swappers.ghost import EyeLandmarks

    eyes = EyeLandmarks(ModelStore(MODELS))
    out = eyes(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 2, 2)


def test_simswap_discriminator_as_released():
    cfg = TrainConfig.model_validate({"model": "simswap", "width": "paper"})
    net = build_discriminator(cfg)
    assert isinstance(net, MultiscaleDiscriminator) and len(net.scales) == 2
    convs = [m for m in net.scales[0].modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1, 1]
    assert all(c.padding == (1, 1) for c in convs)
    norms = [m for m in net.scales[0].modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 4  # after every conv but the first and the last


def test_dmain_runs_real_and_fake_as_separate_batches():
    """With a batch-norm D, the real scores must not depend on the fakes beside them."""
    cfg = TrainConfig.model_validate({"model": "simswap", "simswap": {"debug": TINY["simswap"]}})
    cfg.arch.discriminator.norm = "batch"
    torch.manual_seed(0)
    D = build_discriminator(cfg).train()
    real, fake = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32) * 5
    out = hinge_discriminator(Engine(D), real, fake)
    alone = torch.stack([s[-1].mean() for s in D(real)]).mean()
    assert out.stats["Scores/D/real"].item() == pytest.approx(alone.item(), abs=1e-5)


def test_ghost_eye_loss_off_loads_and_runs_no_landmark_network(tmp_path):
    """Off as released: no eye network is built (its weights are not even needed) and no
    eye statistic is reported."""
    from infra.models import ModelStore
    from training.swappers.base import BuildContext
    from training.swappers.ghost import GhostObjective

    cfg = TrainConfig.model_validate({"model": "ghost", "ghost": {"debug": TINY["ghost"]}})
    ctx = BuildContext(TinyIdentity(), ModelStore(tmp_path), None, tmp_path, 32)  # empty dir
    obj = GhostObjective.build(cfg.ghost, ctx)
    assert obj.eye_net is None and "Loss/G/eye" not in obj.G_STATS
    from training.registry import build_generator

    torch.manual_seed(0)
    G, D = build_generator(cfg, 8), build_discriminator(cfg)
    g, _ = obj.generator_loss(Engine(G), D, _batch(cfg.arch.image_size))
    assert set(g.stats) == set(obj.G_STATS) and torch.isfinite(g.loss)


@pytest.mark.parametrize(
    ("model", "betas", "weight_decay"),
    [
        ("aei_net", (0.0, 0.999), 1e-4),
        ("ghost", (0.0, 0.999), 1e-4),
        ("simswap", (0.0, 0.99), 0),
        ("cvae", (0.0, 0.99), 0),  # Facke trains in SimSwap's framework
        ("cvae_gan", (0.0, 0.99), 0),
    ],
)
def test_each_swapper_trains_with_its_sources_adam(model, betas, weight_decay):
    from training.engine import adam

    cfg = TrainConfig.model_validate({"model": model})
    for section in (cfg.section.optimizer.generator, cfg.section.optimizer.discriminator):
        group = adam(nn.Linear(2, 2), section).param_groups[0]
        assert (group["lr"], group["betas"], group["weight_decay"]) == (4e-4, betas, weight_decay)
    # a swapper's optimizer is its own: setting GHOST's leaves FaceShifter's alone
    both = TrainConfig.model_validate({"ghost": {"optimizer": {"generator": {"lr": 1e-3}}}})
    assert both.ghost.optimizer.generator.lr == 1e-3 and both.aei_net.optimizer.generator.lr == 4e-4
