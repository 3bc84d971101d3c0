"""Building blocks of the Korshunova et al. 2017 swapper (seed 000 §II.A): the multi-scale
network, the VGG-19 loss network and its loader, and the four losses."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from infra.models import REGISTRY, ModelFileMissingError, ModelStore
from infra.stand_ins import write_stand_in
from training.networks.korshunova import KorshunovaNet, KorshunovaNetConfig, ResidualBlock
from training.perceptual import (
    VGG19_LAYERS,
    PatchStyleBank,
    VGGFeatures,
    content_loss,
    load_vgg19_features,
    luminance_loss,
    total_variation,
)

URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# torchvision's published VGG-19 (cfgs["E"] = 64 64 M 128 128 M 256×4 M 512×4 M 512×4 M):
# (features index, in channels, out channels) of every 3×3 conv up to conv4_2.
CONVS_UP_TO_RELU4_2 = [
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (16, 256, 256),
    (19, 256, 512),
    (21, 512, 512),
]
# (name, features index, channels, stride) of the named ReLUs.
RELUS = [
    ("relu1_1", 1, 64, 1),
    ("relu2_1", 6, 128, 2),
    ("relu3_1", 11, 256, 4),
    ("relu4_1", 20, 512, 8),
    ("relu4_2", 22, 512, 8),
    ("relu5_1", 29, 512, 16),
]


def _expected_keys() -> dict[str, tuple[int, ...]]:
    out = {}
    for i, cin, cout in CONVS_UP_TO_RELU4_2:
        out[f"features.{i}.weight"] = (cout, cin, 3, 3)
        out[f"features.{i}.bias"] = (cout,)
    return out


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _vgg_file(models_dir) -> str:
    return models_dir / REGISTRY["vgg19_imagenet"].file


@pytest.fixture(scope="module")
def vgg_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    write_stand_in(d, "vgg19_imagenet")
    return d


@pytest.fixture(scope="module")
def vgg(vgg_dir) -> VGGFeatures:
    return load_vgg19_features(ModelStore(vgg_dir), "relu4_2")


# --- network -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "min_scale"), [(32, 8), (64, 8)])
def test_network_output_shape_range_and_branch_count(size, min_scale):
    torch.manual_seed(0)
    cfg = KorshunovaNetConfig(image_size=size, min_scale=min_scale, channels=4, combiner_channels=8)
    net = KorshunovaNet(cfg, id_dim=5)
    assert len(net.branches) == int(math.log2(size / min_scale)) + 1 == len(cfg.scales)
    assert cfg.scales[0] == min_scale and cfg.scales[-1] == size
    assert KorshunovaNet.extra_inputs == ("face_mask",) and net.id_dim == 5 and net.cfg is cfg
    target = _images(2, size, 1)
    out, extra = net(target * 3, torch.randn(2, 5))  # out of range input: tanh still bounds it
    assert extra is None and out.shape == (2, 3, size, size) and out.dtype == torch.float32
    assert out.abs().max() <= 1 and out.std() > 0


def test_residual_block_follows_fig_2():
    block = ResidualBlock(3, 6)
    kinds = [type(m) for m in block.body]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d] * 2 + [nn.Conv2d]
    assert [m.kernel_size for m in block.body if isinstance(m, nn.Conv2d)] == [(3, 3)] * 2 + [
        (1, 1)
    ]
    assert isinstance(block.skip, nn.Conv2d) and block.skip.kernel_size == (1, 1)
    assert isinstance(ResidualBlock(6, 6).skip, nn.Identity)
    assert block(torch.randn(2, 3, 8, 8)).shape == (2, 6, 8, 8)


def test_mask_keeps_the_target_outside_the_face_and_z_id_is_ignored():
    torch.manual_seed(0)
    net = KorshunovaNet(KorshunovaNetConfig(image_size=32, channels=4), id_dim=3).eval()
    target = _images(2, 32, 2)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 6:26] = 1.0
    out, _ = net(target, torch.randn(2, 3), mask)
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], target[outside])
    assert (out[~outside] - target[~outside]).abs().mean() > 1e-3
    out2, _ = net(target, torch.randn(2, 3) * 10, mask)
    assert torch.equal(out, out2)
    unmasked, _ = net(target, torch.zeros(2, 3))
    assert torch.allclose(out[~outside], unmasked[~outside])


def test_gradient_reaches_every_branch():
    torch.manual_seed(0)
    net = KorshunovaNet(KorshunovaNetConfig(image_size=32, channels=4), id_dim=2)
    out, _ = net(_images(2, 32, 3), torch.zeros(2, 2))
    (out * torch.randn_like(out)).sum().backward()
    for branch in net.branches:
        for block in branch:
            assert block.body[0].weight.grad.abs().sum() > 0
            assert block.body[6].weight.grad.abs().sum() > 0


def test_wrong_shapes_and_configs_raise():
    net = KorshunovaNet(KorshunovaNetConfig(image_size=32, channels=2), id_dim=4)
    x, z, m = torch.zeros(2, 3, 32, 32), torch.zeros(2, 4), torch.zeros(2, 1, 32, 32)
    bad = [
        (torch.zeros(2, 3, 16, 16), z, None),
        (torch.zeros(2, 1, 32, 32), z, None),
        (torch.zeros(3, 32, 32), z, None),
        (x, torch.zeros(2, 5), None),
        (x, torch.zeros(3, 4), None),
        (x, z, torch.zeros(2, 3, 32, 32)),
        (x, z, torch.zeros(1, 1, 32, 32)),
    ]
    for args in bad:
        with pytest.raises(ValueError, match=r"expected target \(B, 3, 32, 32\).*got"):
            net(*args)
    assert net(x, z, m)[0].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="id_dim"):
        KorshunovaNet(KorshunovaNetConfig(image_size=32), id_dim=0)
    for kwargs in [{"image_size": 48}, {"min_scale": 6}, {"image_size": 4, "min_scale": 8}]:
        with pytest.raises(ValueError, match="power of two"):
            KorshunovaNetConfig(**kwargs)
    with pytest.raises(ValueError):
        KorshunovaNetConfig(image_size=32, widths=3)  # StrictConfig: unknown key


# --- VGG-19 ----------------------------------------------------------------------------------


def test_torchvision_vgg19_keys_match_the_published_layout(vgg_dir):
    with torch.device("meta"):
        state = torchvision.models.vgg19(weights=None).state_dict()
    got = {k: tuple(v.shape) for k, v in state.items() if k.startswith("features.")}
    got = {k: s for k, s in got.items() if int(k.split(".")[1]) <= 21}
    assert got == _expected_keys()
    written = torch.load(_vgg_file(vgg_dir), weights_only=True)
    assert {k: tuple(v.shape) for k, v in written.items()} == _expected_keys()
    assert {name: i for name, i, _, _ in RELUS} == VGG19_LAYERS


def test_relu_names_give_the_expected_channels_and_strides(vgg, vgg_dir):
    assert set(vgg.layers) == {"relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2"}
    x = _images(1, 32, 4).requires_grad_()
    feats = vgg(x)
    for name, _, channels, stride in RELUS[:5]:
        assert feats[name].shape == (1, channels, 32 // stride, 32 // stride), name
    # relu3_1 by hand: torchvision layers 0..11 with the file's weights, ImageNet-normalised.
    with torch.device("meta"):
        ref = torchvision.models.vgg19(weights=None).features[:12]
    ref = ref.to_empty(device="cpu")
    written = torch.load(_vgg_file(vgg_dir), weights_only=True)
    ref.load_state_dict({k[9:]: v for k, v in written.items() if int(k.split(".")[1]) < 12})
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(feats["relu3_1"], ref(((x + 1) / 2 - mean) / std))
    feats["relu4_2"].sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())


def test_loader_refuses_missing_unknown_and_wrong_shape_keys(vgg_dir, tmp_path):
    with pytest.raises(ValueError, match=r"missing \['features.23.weight'"):
        load_vgg19_features(ModelStore(vgg_dir), "relu5_1")
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        load_vgg19_features(ModelStore(vgg_dir), "relu4_3")
    good = torch.load(_vgg_file(vgg_dir), weights_only=True)
    cases = {
        "features.21.bias": {**good, "features.21.bias": torch.zeros(256)},
        "head.weight": {**good, "head.weight": torch.zeros(3)},
        "features.1.weight": {**good, "features.1.weight": torch.zeros(3)},  # a ReLU has none
    }
    for key, state in cases.items():
        write_stand_in(tmp_path / key, "vgg19_imagenet", state)
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            load_vgg19_features(ModelStore(tmp_path / key), "relu4_2")


def test_missing_file_names_file_and_url(tmp_path):
    spec = REGISTRY["vgg19_imagenet"]
    assert (spec.task, spec.sha256, spec.sha256_prefix, spec.url) == (
        "backbone",
        None,
        "dcbb9e9d",
        URL,
    )
    with pytest.raises(ModelFileMissingError) as err:
        load_vgg19_features(ModelStore(tmp_path), "relu4_2")
    assert "vgg19-dcbb9e9d.pth" in str(err.value) and URL in str(err.value)
    assert "expected sha256 starting dcbb9e9d" in str(err.value)


# --- losses ----------------------------------------------------------------------------------


def test_style_loss_is_zero_for_a_style_image_and_larger_for_another(vgg):
    style = _images(3, 32, 5)
    bank = PatchStyleBank(vgg, style, torch.zeros(3, 3), n_best=3)
    own = bank.loss(vgg(style[1:2]), torch.zeros(1, 3))
    other = bank.loss(vgg(_images(1, 32, 6)), torch.zeros(1, 3))
    assert own.dtype == torch.float32 and other.dtype == torch.float32
    assert own < 1e-6 * other and other > 0
    # chunked matching (one style patch per chunk) gives the same loss; any float dtype in
    feats = vgg(_images(2, 32, 7))
    tiny = PatchStyleBank(vgg, style, torch.zeros(3, 3), n_best=3, chunk_bytes=1)
    torch.testing.assert_close(
        tiny.loss(feats, torch.zeros(2, 3)), bank.loss(feats, torch.zeros(2, 3))
    )
    dbl = {k: v.double() for k, v in feats.items()}
    assert bank.loss(dbl, torch.zeros(2, 3)).dtype == torch.float32
    with pytest.raises(ValueError, match="target_pose"):
        bank.loss(feats, torch.zeros(2, 2))


def test_n_best_uses_the_pose_nearest_style_images(vgg):
    poses = torch.tensor([[0.0, 0, 0], [30, 0, 0], [-40, 10, 0], [5, -5, 3]])
    style = _images(4, 32, 8)
    bank = PatchStyleBank(vgg, style, poses, layers=("relu3_1",), n_best=2)
    idx = bank.nearest(torch.tensor([[2.0, 0, 0], [35, 0, 0], [-30, 10, 0]]))
    assert idx.tolist() == [[0, 3], [1, 3], [2, 0]]
    # output = style image 2: zero loss only when image 2 is among the sample's n_best
    x = vgg(style[2:3]).copy()
    x["relu3_1"] = x["relu3_1"].detach().requires_grad_()
    near = bank.loss(x, torch.tensor([[-38.0, 9, 0]]))
    far = bank.loss(x, torch.tensor([[28.0, 0, 0]]))  # images 1 and 3
    assert near < 1e-6 * far
    only_1_and_3 = PatchStyleBank(vgg, style[[1, 3]], poses[[1, 3]], layers=("relu3_1",))
    torch.testing.assert_close(far, only_1_and_3.loss(x, torch.zeros(1, 3)))
    far.backward()
    assert x["relu3_1"].grad.abs().sum() > 0


def test_content_loss():
    a = torch.randn(2, 4, 5, 5, requires_grad=True)
    b = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert content_loss(a, a.detach()) == 0
    assert content_loss(a, a.detach() + 0.5).item() == pytest.approx(0.25)
    content_loss(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad is None
    with pytest.raises(ValueError, match="differ"):
        content_loss(a, b[:, :3])


def test_luminance_loss_sees_lighting_not_texture():
    x = _images(2, 32, 9) * 0.5
    assert luminance_loss(x, x) == 0
    bright = luminance_loss(x + 0.2, x)
    assert bright.item() == pytest.approx(0.1**2, rel=1e-4)  # +0.2 in [-1, 1] = +0.1 luma
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float() * 0.2  # zero mean, same energy as +0.2
    assert luminance_loss(x + checker, x) < 0.01 * bright
    left = x.clone()
    left[..., :16] += 0.2
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., :16] = 1
    assert luminance_loss(left, x, mask) > 2 * luminance_loss(left, x, 1 - mask)
    with pytest.raises(ValueError, match="mask"):
        luminance_loss(x, x, mask[:, :, :16])


def test_total_variation():
    assert total_variation(torch.full((2, 3, 8, 8), 0.3)) == 0
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(2, 3, 8, 8) * 0.1
    assert total_variation(ramp).item() == pytest.approx(0.1)  # anisotropic: dx only
    assert total_variation(ramp + ramp.transpose(2, 3)).item() == pytest.approx(0.2)
    with pytest.raises(ValueError):
        total_variation(torch.zeros(1, 3, 1, 8))
