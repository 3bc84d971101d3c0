"""Facke's CVAE and CVAE-GAN (seed 002 §2.2): the 2-D latent, the KL term, the per-pair
reconstruction weights of the alternating schedule, and the CVAE-GAN's SimSwap phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.config import TrainConfig
from training.data import PairBatch
from training.indexed_pairs import IdentityIndex, PairDraw
from training.losses import kl_to_standard_normal, weighted_mse
from training.networks.cvae import CVAEGenerator, CVAEGeneratorConfig
from training.registry import build_discriminator, build_generator
from training.swappers.cvae import CVAEObjective
from training.swappers.cvae_gan import CVAEGANObjective

from .test_objectives import ID_DIM, TINY, Engine, TinyIdentity, _batch

CFG = CVAEGeneratorConfig(**TINY["cvae"])


def _inputs(n: int = 2):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    return x, nn.functional.normalize(torch.randn(n, ID_DIM, generator=g), dim=1)


def test_latent_is_2d_and_sampled_only_in_training():
    torch.manual_seed(0)
    net = CVAEGenerator(CFG, ID_DIM)
    x, z = _inputs()
    net.train()
    a, (mu, logvar) = net(x, z)
    b, _ = net(x, z)
    assert mu.shape == logvar.shape == (2, CFG.channels[-1], 8, 8)  # 32 px / 2^2: a 2-D latent
    assert not torch.allclose(a, b)  # training samples z = μ + σ ε
    net.eval()
    with torch.no_grad():
        c, (mu_e, _) = net(x, z)
        d, _ = net(x, z)
    assert torch.equal(c, d)  # evaluation: the mean, no sampling
    assert torch.equal(c, net.decode(net.inject(mu_e, z)))


def test_eval_latent_sample_setting_samples_at_evaluation():
    torch.manual_seed(0)
    net = CVAEGenerator(CFG.model_copy(update={"eval_latent": "sample"}), ID_DIM).eval()
    x, z = _inputs()
    with torch.no_grad():
        assert not torch.allclose(net(x, z)[0], net(x, z)[0])


def test_identity_is_injected_into_the_latent():
    torch.manual_seed(0)
    net = CVAEGenerator(CFG, ID_DIM).eval()
    x, z = _inputs()
    with torch.no_grad():
        assert not torch.allclose(net(x, z)[0], net(x, z.flip(0))[0])


def test_wrong_shapes_are_refused():
    net = CVAEGenerator(CFG, ID_DIM)
    with pytest.raises(ValueError, match="expected"):
        net(torch.zeros(1, 3, 16, 16), torch.zeros(1, ID_DIM))


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).mean()
    assert torch.allclose(kl_to_standard_normal(mu, logvar), expected, atol=1e-6)
    assert kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)) == 0


def test_weighted_mse_weighs_each_pair():
    swap, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert weighted_mse(swap, target, torch.tensor([10.0, 1.0])) == pytest.approx(5.5)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        weighted_mse(swap, target, torch.ones(3))


def _pair(kind: str, same: bool) -> PairBatch:
    b = _batch(32)
    flag = torch.tensor([same, same])
    return PairBatch(b.target, b.target if same else b.source, b.z_id, flag, flag, kind)


@pytest.mark.parametrize("kind", ["intra", "inter"])
def test_reconstruction_gradient_follows_the_pair_weight(kind):
    """Facke §2.2.4: a high reconstruction weight on intra-ID, a low one on inter-ID pairs."""
    cfg = TrainConfig.model_validate({"model": "cvae", "cvae": {"debug": TINY["cvae"]}})
    only_rec = cfg.cvae.weights.model_copy(update={"id": 0.0, "kl": 0.0})
    torch.manual_seed(0)
    G = build_generator(cfg, ID_DIM)
    b = _pair(kind, same=kind == "intra")
    g, _ = CVAEObjective(TinyIdentity(), only_rec).generator_loss(Engine(G), None, b)
    weight = only_rec.rec_intra if kind == "intra" else only_rec.rec_inter
    assert g.loss.item() == pytest.approx(weight * g.stats["Loss/G/rec"].item(), rel=1e-5)


def test_cvae_schedule_alternates_intra_same_image_and_inter():
    """Odd steps (the first batch of an epoch, index 0) intra-ID with source = target;
    even steps inter-ID with another identity (Facke §2.2.4)."""
    recipe = TrainConfig.model_validate({"model": "cvae"}).recipe
    index = IdentityIndex(
        ("s",), np.array([0, 12]), np.arange(12, dtype=np.int32) // 3, tuple("abcd")
    )
    draws = list(PairDraw(index, recipe, 4, 6, seed=0, epoch=0))
    assert [d.kind for d in draws] == ["intra", "inter"] * 3
    for d in draws[0::2]:
        assert d.targets == d.sources and all(d.same_image)
    for d in draws[1::2]:
        pairs = zip(d.targets, d.sources, strict=True)
        assert all(index.identity[t] != index.identity[s] for t, s in pairs)


def test_cvae_gan_is_simswap_with_kl():
    cfg = TrainConfig.model_validate({"model": "cvae_gan", "cvae_gan": {"debug": TINY["cvae_gan"]}})
    assert cfg.recipe.draw == "identities" and cfg.recipe.intra == "same_identity"  # -IG
    torch.manual_seed(0)
    G, D = build_generator(cfg, ID_DIM), build_discriminator(cfg)
    obj = CVAEGANObjective(TinyIdentity(), cfg.cvae_gan.weights)
    g, _ = obj.generator_loss(Engine(G), D, _batch(32))
    s = {k: v.item() for k, v in g.stats.items()}
    w = cfg.cvae_gan.weights
    expected = s["Loss/G/adv"] + w.id * s["Loss/G/id"] + w.rec * s["Loss/G/rec"]
    expected += w.wfm * s["Loss/G/wfm"] + w.kl * s["Loss/G/kl"]
    assert s["Loss/G/total"] == pytest.approx(expected, rel=1e-5) and s["Loss/G/kl"] > 0
