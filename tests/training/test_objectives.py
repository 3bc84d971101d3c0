"""Each registered swapper's objective on 2 samples: its statistics keys, finite losses,
gradients only where each phase should put them, and the recipe checks of its section."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infra.stand_ins import random_vgg19_features
from training.config import TrainConfig
from training.data import PairBatch
from training.perceptual import PatchStyleBank, vgg19_features_from_state
from training.registry import SWAPPERS, build_discriminator, build_generator
from training.swappers.base import Objective
from training.swappers.ghost import GhostObjective
from training.swappers.idatt import IDATTObjective
from training.swappers.korshunova import KorshunovaObjective
from training.swappers.rafswap import RAFSwapObjective

from ..conftest import TINY_DDPM_ILVR, TINY_IDATT, TINY_RAFSWAP

ID_DIM = 8
TINY_D = {"base_channels": 4, "max_channels": 8, "num_layers": 2, "num_scales": 2}
TINY_SIMSWAP = {
    "image_size": 32,
    "base_channels": 4,
    "max_channels": 8,
    "num_down": 2,
    "id_blocks": 1,
}
TINY = {
    "aei_net": {"image_size": 32, "base_channels": 4, "max_channels": 8, "discriminator": TINY_D},
    "ghost": {"image_size": 32, "base_channels": 4, "max_channels": 8, "discriminator": TINY_D},
    "simswap": {
        "image_size": 32,
        "base_channels": 4,
        "max_channels": 8,
        "num_down": 2,
        "id_blocks": 1,
        "discriminator": TINY_D,
    },
    "cvae": TINY_SIMSWAP,
    "cvae_gan": {**TINY_SIMSWAP, "discriminator": TINY_D},
    "korshunova": {"image_size": 32, "min_scale": 8, "channels": 4, "combiner_channels": 8},
    "rafswap": TINY_RAFSWAP,
    "idatt": {**TINY_IDATT, "discriminator": TINY_D},
    "ddpm_ilvr": TINY_DDPM_ILVR,
}


class TinyLPIPS(nn.Module):
    """A stand-in perceptual distance: (x, y) (B, 3, S, S) → (B, 1, 1, 1) mean |x − y|."""

    def forward(self, x, y):
        return (x - y).abs().mean((1, 2, 3), keepdim=True)


class TinyIdentity(nn.Module):
    """A frozen stand-in identity encoder: (B, 3, S, S) → (B, ID_DIM) L2-normalised."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, ID_DIM).requires_grad_(False)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return nn.functional.normalize(self.proj(x), dim=1)


class TinyEyes(nn.Module):
    """Stand-in eye landmarks: (B, 3, S, S) → (B, 12, 2) in [0, 1], differentiable."""

    def forward(self, x):
        return torch.sigmoid(nn.functional.adaptive_avg_pool2d(x, (4, 6)).mean(1)).reshape(
            x.shape[0], 12, 2
        )


class Engine:
    """The slice of a DeepSpeed engine the objectives use: call, ``module``."""

    def __init__(self, module):
        self.module = module

    def __call__(self, *args):
        return self.module(*args)


def korshunova_objective(section, size: int) -> KorshunovaObjective:
    """Korshunova's objective on a random VGG-19 stand-in and three random style images."""
    s = section.style
    vgg = vgg19_features_from_state(random_vgg19_features(), "relu4_2")
    g = torch.Generator().manual_seed(3)
    style = torch.rand(3, 3, size, size, generator=g) * 2 - 1
    bank = PatchStyleBank(vgg, style, torch.randn(3, 3, generator=g) * 10, s.style_layers)
    code = nn.functional.normalize(torch.randn(1, ID_DIM, generator=g), dim=1)
    return KorshunovaObjective(TinyIdentity(), section, vgg, bank, "style_person", code)


def _objective(name: str, cfg: TrainConfig) -> Objective:
    row = SWAPPERS[name]
    if row.objective is GhostObjective:
        s = cfg.section
        return GhostObjective(TinyIdentity(), TinyEyes(), s.weights, s.heatmap_size, 1.5)
    if row.objective is KorshunovaObjective:
        return korshunova_objective(cfg.section, cfg.arch.image_size)
    if row.objective is RAFSwapObjective:
        size = cfg.arch.image_size
        prior = torch.zeros(1, 1, size, size)
        prior[..., size // 4 : -size // 4, size // 4 : -size // 4] = 1
        return RAFSwapObjective(TinyIdentity(), cfg.section.weights, TinyLPIPS(), prior)
    if row.objective is IDATTObjective:
        return IDATTObjective(TinyIdentity(), cfg.section.weights, TinyLPIPS(), None)
    return row.objective(TinyIdentity(), cfg.section.weights)


def _batch(size: int) -> PairBatch:
    """Two pairs (one intra-, one inter-identity) with every annotation of
    :data:`~training.swappers.base.ANNOTATIONS` (a centred face mask, two head poses)."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    z = nn.functional.normalize(torch.randn(2, ID_DIM, generator=g), dim=1)
    same_image = torch.tensor([True, False])
    mask = torch.zeros(2, 1, size, size)
    mask[..., size // 4 : -size // 4, size // 4 : -size // 4] = 1
    regions = (torch.rand(2, 4, size, size, generator=g) > 0.7).float()
    notes = {
        "face_mask": mask,
        "pose": torch.tensor([[5.0, -3, 1], [-20, 4, 0]]),
        "regions": regions,
        "source_regions": regions.flip(0),
    }
    return PairBatch(target, target.flip(0), z, same_image, same_image.clone(), "mixed", notes)


@pytest.mark.parametrize("name", list(SWAPPERS))
def test_objective_phases_on_two_samples(name):
    cfg = TrainConfig.model_validate({"model": name, name: {"debug": TINY[name]}})
    torch.manual_seed(0)
    G, D = build_generator(cfg, ID_DIM), build_discriminator(cfg)
    objective = _objective(name, cfg)
    b = _batch(cfg.arch.image_size)

    for p in [] if D is None else D.parameters():
        p.requires_grad_(False)
    g, swap = objective.generator_loss(Engine(G), D, b)
    assert set(g.stats) == set(objective.G_STATS) and "Loss/G/total" in g.stats
    assert torch.isfinite(g.loss) and all(torch.isfinite(v) for v in g.stats.values())
    g.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
    assert swap.shape == b.target.shape and not swap.requires_grad
    if D is None:  # trained without an adversary: Gmain only
        assert SWAPPERS[name].discriminator is None
        return

    for p in D.parameters():
        p.requires_grad_(True)
    d = objective.discriminator_loss(Engine(D), b, swap)
    assert {"Loss/D/total", "Scores/D/real", "Scores/D/fake"} <= set(d.stats)
    assert torch.isfinite(d.loss) and d.loss.item() >= 0  # hinge and logistic losses
    reg = objective.d_regularization_loss(Engine(D), b, swap, interval=4)
    if name in ("simswap", "cvae_gan"):
        assert set(reg.stats) == {"Loss/D/gp"} and torch.isfinite(reg.loss)
    else:
        assert reg is None


@pytest.mark.parametrize(
    ("name", "data", "weights", "match"),
    [
        ("aei_net", {"intra": "same_identity"}, {}, "X_s = X_t"),
        ("aei_net", {"same_ratio": 0.0}, {}, "X_s = X_t"),
        ("ghost", {"same_ratio": 0.0}, {}, "same-person"),
        ("simswap", {"pairing": "mixed", "same_ratio": 0.0}, {}, "intra-ID"),
        ("cvae", {"pairing": "mixed", "same_ratio": 0.0}, {}, "intra-ID"),
        ("cvae_gan", {"pairing": "mixed", "same_ratio": 0.0}, {}, "intra-ID"),
    ],
)
def test_recipes_that_silence_a_loss_are_refused(name, data, weights, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.model_validate({name: {"data": data, "weights": weights}})


def test_recipe_allowed_when_the_loss_is_off():
    cfg = TrainConfig.model_validate(
        {"aei_net": {"data": {"intra": "same_identity"}, "weights": {"rec": 0.0}}}
    )
    assert cfg.recipe.intra == "same_identity"


def test_each_model_trains_with_its_own_recipe():
    ghost = TrainConfig.model_validate({"model": "ghost"})
    simswap = TrainConfig.model_validate({"model": "simswap"})
    assert ghost.recipe.intra == "same_identity"
    assert simswap.recipe.pairing == "alternate"
    assert TrainConfig().recipe.intra == "same_image"


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="aei_net, ghost, simswap, cvae, cvae_gan, korshunova"):
        TrainConfig.model_validate({"model": "faceswap9000"})


class _FixedSwap(nn.Module):
    """A generator whose swap does not depend on the target's attribute maps, so any gradient
    reaching those maps comes from the attribute loss itself."""

    def __init__(self, size: int):
        super().__init__()
        self.enc = nn.Conv2d(3, 2, 3, padding=1)
        self.swap = nn.Parameter(torch.zeros(1, 3, size, size))
        self.seen: list[torch.Tensor] = []

    def attributes(self, x):
        return [self.enc(x)]

    def forward(self, target, z_id):
        z_att = self.attributes(target)
        z_att[0].retain_grad()
        self.seen.append(z_att[0])
        return torch.tanh(self.swap).expand_as(target), z_att


class _OneScaleD(nn.Module):
    """One-scale, one-layer patch discriminator: [[logits (B, 1, h, w)]]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3)

    def forward(self, x):
        return [[self.conv(x)]]


@pytest.mark.parametrize("name", ["aei_net", "ghost"])
def test_attribute_loss_trains_through_the_target_pass(name):
    """FaceShifter eq. 4.10: no stop-gradient on z_att(X_t)."""
    cfg = TrainConfig.model_validate({"model": name})
    weights = cfg.section.weights.model_copy(
        update={k: 0.0 for k in cfg.section.weights.model_dump() if k != "att"}
    )
    objective = type(_objective(name, cfg))
    obj = (
        objective(TinyIdentity(), TinyEyes(), weights, 16, 1.5)
        if objective is GhostObjective
        else objective(TinyIdentity(), weights)
    )
    gen = _FixedSwap(16)
    b = _batch(16)
    g, _ = obj.generator_loss(Engine(gen), _OneScaleD(), b)
    g.loss.backward()
    target_maps = gen.seen[0]
    assert target_maps.grad is not None and target_maps.grad.abs().sum() > 0


def test_accumulation_with_a_lazy_regulariser_is_refused():
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig.model_validate({"model": "simswap", "discriminator": {"grad_accum": 2}})
    # without Dreg (AEI-Net), or with SimSwap's penalty off, accumulation is allowed
    TrainConfig.model_validate({"model": "aei_net", "discriminator": {"grad_accum": 2}})
    TrainConfig.model_validate(
        {"model": "simswap", "simswap": {"weights": {"gp": 0}}, "discriminator": {"grad_accum": 2}}
    )
