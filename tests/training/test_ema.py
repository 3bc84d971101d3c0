"""The EMA generator: β from the half-life, parameters averaged, buffers copied, state
round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.ema import EMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_half_life_halves_an_old_weight_share():
    net = _net()
    ema = EMA(net, half_life_steps=10)
    assert ema.beta**10 == pytest.approx(0.5)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    for _ in range(10):
        ema.update(net)
    # after h steps toward w0 + 1 the shadow has moved half way
    assert torch.allclose(ema.shadow[0].weight, w0 + 0.5, atol=1e-5)


def test_buffers_are_copied_and_shadow_is_frozen():
    net = _net()
    ema = EMA(net, half_life_steps=5)
    net.train()
    net(torch.randn(8, 3))  # updates BatchNorm running stats
    ema.update(net)
    assert torch.equal(ema.shadow[1].running_mean, net[1].running_mean)
    assert not any(p.requires_grad for p in ema.shadow.parameters())
    assert not ema.shadow.training


def test_state_dict_round_trip():
    net = _net()
    a, b = EMA(net, 5), EMA(_net(), 5)
    with torch.no_grad():
        net[0].weight.mul_(3)
    a.update(net)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.shadow[0].weight, b.shadow[0].weight)


def test_batch_norm_statistics_are_recomputed_for_the_averaged_weights():
    """The EMA's copied running statistics belong to the live weights; after recomputation
    they are those of the EMA weights' own activations on the calibration batches."""
    from training.ema import recompute_batch_norm

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(net, half_life_steps=1e6)  # shadow ≈ the initial weights
    with torch.no_grad():
        net[0].weight.mul_(5).add_(1)
    net.train()
    for _ in range(20):
        net(torch.randn(16, 3))
    ema.update(net)  # copies the live statistics
    batches = [(torch.randn(8, 3, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    live_mean = ema.shadow[1].running_mean.clone()
    assert recompute_batch_norm(ema.shadow, batches) == 1
    with torch.no_grad():
        acts = torch.cat([ema.shadow[0](x) for (x,) in batches])
    torch.testing.assert_close(ema.shadow[1].running_mean, acts.mean(0))
    assert not torch.allclose(live_mean, acts.mean(0), atol=1e-2)
    assert not ema.shadow.training and ema.shadow[1].momentum == net[1].momentum


def test_nothing_to_recompute_without_batch_norm():
    from training.ema import recompute_batch_norm

    assert recompute_batch_norm(nn.Linear(2, 2), [(torch.randn(1, 2),)]) == 0
