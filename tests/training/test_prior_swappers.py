"""The swappers built on pretrained priors, on their test-size stand-ins: RAFSwap's region
tokens and projector (seed 000 §II.B eq. 1–4) and W-norm against style collapse (§III.C),
IDATT's attention (seed 004 eq. 4–5) and frozen parts, DDPM-ILVR's module, the
Deep3DFaceRecon layout, and the region annotations of both faces of a pair."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infra.models import ModelStore
from infra.stand_ins import write_stand_in
from training.networks.ddpm_ilvr import DDPMILVRConfig, DDPMILVRNet
from training.networks.idatt import IDATT, IDATTNet
from training.networks.rafswap import RAFSwapNet, RegionProjector, region_pool
from training.priors.ddpm import DDPMConfig, low_pass
from training.swappers.idatt import IDATTArchConfig, IDATTObjective, IDATTSwapperConfig
from training.swappers.rafswap import RAFSwapConfig, RAFSwapObjective

from ..conftest import TINY_DDPM_ILVR, TINY_IDATT, TINY_RAFSWAP
from .test_objectives import ID_DIM, Engine, TinyIdentity, TinyLPIPS, _batch

PRIORS = ("stylegan2_ffhq_1024", "psp_ffhq_encode", "ddpm_ema_celebahq_256")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    """A models directory holding the test-size stand-ins of the three priors."""
    folder = tmp_path_factory.mktemp("priors")
    for name in PRIORS:
        write_stand_in(folder, name)
    return ModelStore(folder)


def _rafswap(store) -> RAFSwapNet:
    cfg = RAFSwapConfig.model_validate({"debug": TINY_RAFSWAP}).debug
    torch.manual_seed(0)
    net = RAFSwapNet(cfg, ID_DIM)
    net.load_priors(store)
    return net


def test_region_pool_is_the_mean_under_each_mask():
    feats = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    regions = torch.zeros(2, 4, 8, 8)
    regions[:, 0, :4, :4] = 1  # the top-left quarter = feature pixels (0..1, 0..1)
    regions[:, 1] = 1  # everywhere
    pooled = region_pool(feats, regions)
    assert pooled.shape == (2, 4, 3)
    assert torch.allclose(pooled[:, 0], feats[..., :2, :2].mean((2, 3)))
    assert torch.allclose(pooled[:, 1], feats.mean((2, 3)))
    assert torch.equal(pooled[:, 2:], torch.zeros(2, 2, 3))  # absent regions: zero tokens


def test_projector_updates_only_positions_inside_a_target_region():
    torch.manual_seed(0)
    proj = RegionProjector(6, 8)
    feats, tokens = torch.randn(1, 6, 4, 4), torch.randn(1, 4, 8)
    regions = torch.zeros(1, 4, 4, 4)
    regions[0, 2, 1:3, 1:3] = 1
    out = proj(feats, regions, tokens)
    inside = regions.sum(1, keepdim=True).bool().expand_as(feats)
    assert torch.equal(out[~inside], feats[~inside])
    assert not torch.allclose(out[inside], feats[inside])


def test_rafswap_blends_by_its_mask_and_keeps_its_priors_frozen(store):
    net = _rafswap(store).train()
    b = _batch(32)
    args = (b.source, b.annotations["regions"], b.annotations["source_regions"])
    bn = net.encoder.input_layer[1]
    stats = bn.running_mean.clone()
    swap, x = net(b.target, b.z_id, *args)
    assert torch.allclose(swap, x["mask"] * x["raw"] + (1 - x["mask"]) * b.target, atol=1e-6)
    assert ((x["mask"] > 0) & (x["mask"] < 1)).all()
    assert torch.allclose(x["styles"], x["codes"] + net.w_avg)
    assert torch.equal(bn.running_mean, stats) and not bn.training  # frozen backbone stays eval
    swap.mean().backward()
    assert all(p.grad is None for m in net.frozen_modules() for p in m.parameters())
    assert net.tokenizers[0].weight.grad is not None and net.mask.to_mask[0].weight.grad is not None
    assert net.encoder.styles[0].linear.weight.grad is not None  # style heads train


def _style_drift(store, w_norm: float, steps: int = 25) -> tuple[float, float]:
    """Train a tiny RAFSwap `steps` Adam steps (lr 1e-2) on one batch with a loss that drives
    the style vectors away from the prior, and return (|mean − prior mean| + |std − prior std|
    of the W+ codes StyleGAN2 receives, mean ‖codes − w̄‖)."""
    net = _rafswap(store)
    section = RAFSwapConfig(weights={"w_norm": w_norm})
    obj = RAFSwapObjective(TinyIdentity(), section.weights, TinyLPIPS(), torch.zeros(1, 1, 32, 32))
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    b = _batch(32)
    for _ in range(steps):
        g, _ = obj.generator_loss(Engine(net), None, b)
        opt.zero_grad()
        g.loss.backward()
        opt.step()
    with torch.no_grad():
        w = net.decoder.mapping(
            torch.randn(4096, net.decoder.style_dim, generator=torch.Generator().manual_seed(1))
        )
        _, x = net(
            b.target, b.z_id, b.source, b.annotations["regions"], b.annotations["source_regions"]
        )
    s = x["styles"]
    drift = abs(float(s.mean() - w.mean())) + abs(float(s.std() - w.std()))
    return drift, float(x["codes"].flatten(1).norm(dim=1).mean())


def test_w_norm_keeps_the_style_statistics_near_the_prior(store):
    """Seed 000 §III.C: without W-norm the codes wander from the prior's W distribution (its
    Fig. 9 collapse); with it they stay near the average latent."""
    free, free_norm = _style_drift(store, w_norm=0.0)
    held, held_norm = _style_drift(store, w_norm=1.0)
    assert held_norm < 0.5 * free_norm
    assert held < free


def test_idatt_starts_as_the_identity_and_attends_over_source_positions():
    torch.manual_seed(0)
    block = IDATT(8)
    f_s, f_t = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.equal(block(f_s, f_t), f_t)  # γ = 0 at initialisation (eq. 5)
    m = block.attention(f_s, f_t)
    assert m.shape == (2, 16, 16) and torch.allclose(m.sum(-1), torch.ones(2, 16))
    with torch.no_grad():
        block.gamma.fill_(1.0)
    moved = block(f_s, f_t)
    assert not torch.allclose(moved, f_t)
    assert not torch.allclose(block(f_s.flip(0), f_t), moved)  # the source changes the output


def test_idatt_net_trains_all_but_its_frozen_parts(store):
    cfg = IDATTArchConfig(**TINY_IDATT)
    torch.manual_seed(0)
    net = IDATTNet(cfg, ID_DIM)
    net.load_priors(store)
    b = _batch(32)
    out, x = net.train()(b.target, b.z_id, b.source)
    assert out.shape == b.target.shape and out.abs().max() <= 1
    assert x["side"].shape == b.target.shape and [m.shape[-1] for m in x["masks"]] == [16, 32]
    out.mean().backward()
    assert all(p.grad is None for m in net.frozen_modules() for p in m.parameters())
    assert net.encoder.latlayer1.weight.grad is not None  # Φ_E^lat trains (§3.1)
    assert net.idatt[0].gamma.grad is not None and net.post.to_rgb.weight.grad is not None


def test_idatt_refuses_a_generator_smaller_than_its_crops():
    with pytest.raises(ValueError, match="StyleGAN2 size 64 < image_size 128"):
        IDATTNet(IDATTArchConfig(**{**TINY_IDATT, "image_size": 128, "encoder_size": 64}), 4)


def test_ddpm_ilvr_swap_keeps_the_target_low_frequencies(store):
    """The module's swap is ILVR (Facke §2.3): at the U-Net's size its φ_N matches the
    target's, not the source's; the same call gives the same swap (seeded noise)."""
    cfg = DDPMILVRConfig(**{**TINY_DDPM_ILVR, "ilvr": {"n": 4, "steps": 20}})
    net = DDPMILVRNet(cfg, ID_DIM).eval()
    net.load_priors(store)
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    source = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    a, _ = net(target, None, source)
    b, _ = net(target, None, source)
    assert torch.equal(a, b) and a.shape == target.shape
    side = cfg.unet.sample_size
    small = nn.functional.adaptive_avg_pool2d
    lp = lambda x: low_pass(small(x, side), 4)  # noqa: E731
    assert (lp(a) - lp(target)).abs().mean() < 0.5 * (lp(a) - lp(source)).abs().mean()
    eps, _ = net(torch.randn(2, 3, side, side), None, None, torch.tensor([3, 50]))
    assert eps.shape == (2, 3, side, side)


def test_ddpm_prior_of_another_architecture_is_refused(store):
    cfg = DDPMILVRConfig(unet=DDPMConfig(block_out_channels=(8, 8)), image_size=32)
    with pytest.raises(ValueError, match="is not the U-Net of this architecture"):
        DDPMILVRNet(cfg, ID_DIM).load_priors(store)


def test_three_d_loss_compares_identity_coefficients():
    """Eq. 17 through Deep3DFaceRecon's R-Net (random weights in its layout): zero for the
    source itself, positive otherwise, and a gradient to the swap only."""
    from infra.paper_models import ReconNet

    torch.manual_seed(0)
    recon = ReconNet().eval().requires_grad_(False)
    for layer in recon.final_layers:  # the release initialises them to 0
        nn.init.normal_(layer.weight, std=0.01)
    obj = IDATTObjective(TinyIdentity(), IDATTSwapperConfig().weights, TinyLPIPS(), recon)
    g = torch.Generator().manual_seed(0)
    source = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    swap = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    assert obj.identity_coefficients(source).shape == (2, 80)
    assert float(obj.three_d_loss(source, source)) == pytest.approx(0.0, abs=1e-5)
    loss = obj.three_d_loss(swap, source)
    loss.backward()
    assert loss > 0 and swap.grad.abs().sum() > 0


def test_pairs_carry_the_regions_of_both_faces(prepared):
    """``regions`` come from the target sample, ``source_regions`` from the source sample:
    in a same-image pair they are equal; values are {0, 1} masks."""
    from training.data import EpochLoader
    from training.indexed_pairs import IdentityIndex, IndexedPairSource

    _, card, _, prep_dir, _ = prepared
    index = IdentityIndex.build(card.shard_paths(prep_dir, "train"))
    recipe = RAFSwapConfig(data={"same_ratio": 0.5}).data
    notes = ("regions", "source_regions")
    loader = EpochLoader(IndexedPairSource(index, recipe, 8, 32, 50, 0, 0, 1, notes), 0, 50)
    batch = next(loader)
    r, s = batch.annotations["regions"], batch.annotations["source_regions"]
    assert r.shape == s.shape == (len(batch.target), 4, 32, 32)
    assert set(r.unique().tolist()) <= {0.0, 1.0} and r.sum() > 0
    same = batch.same_image
    assert same.any() and torch.equal(r[same], s[same])
