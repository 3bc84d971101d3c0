"""LPIPS (Zhang et al. 2018) from the ``lpips`` package over the registry's VGG-16: the
backbone is torchvision's published layout, loaded from the models directory (a random
stand-in here), under the package's own v0.1 linear layers."""

from __future__ import annotations

import pytest
import torch

from infra.models import REGISTRY, ModelFileMissingError, ModelStore
from infra.stand_ins import write_stand_in
from training.perceptual import load_lpips_vgg

# torchvision vgg16 `features` convs (cfgs["D"]): (index, in, out), the published layout.
VGG16_CONVS = [
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
    (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
    (26, 512, 512), (28, 512, 512),
]  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    write_stand_in(d, "vgg16_imagenet")
    return d


def test_backbone_is_the_registry_file_in_torchvision_layout(models):
    state = torch.load(models / REGISTRY["vgg16_imagenet"].file, weights_only=True)
    expected = {f"features.{i}.weight": (o, c, 3, 3) for i, c, o in VGG16_CONVS}
    expected |= {f"features.{i}.bias": (o,) for i, _, o in VGG16_CONVS}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    lp = load_lpips_vgg(ModelStore(models))
    convs = {
        n.split(".")[1]: m for n, m in lp.net.named_modules() if "." in n and hasattr(m, "weight")
    }
    assert sorted(int(i) for i in convs) == [i for i, _, _ in VGG16_CONVS]
    for i, conv in convs.items():
        assert torch.equal(conv.weight, state[f"features.{i}.weight"]), i
    assert not any(p.requires_grad for p in lp.parameters()) and not lp.training


def test_lpips_is_zero_on_equal_images_and_grows_with_distortion(models):
    lp = load_lpips_vgg(ModelStore(models))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 64, 64, generator=g)
    d = [lp(x, (x + s * noise).clamp(-1, 1)).flatten() for s in (0.0, 0.05, 0.3)]
    assert torch.equal(d[0], torch.zeros(2)) and (d[1] > 0).all() and (d[2] > d[1]).all()
    y = x.clone().requires_grad_()
    lp(y, x.flip(0)).sum().backward()
    assert y.grad.abs().sum() > 0  # a loss: the gradient reaches the image


def test_a_wrong_backbone_or_a_missing_file_is_named(models, tmp_path):
    bad = torch.load(models / REGISTRY["vgg16_imagenet"].file, weights_only=True)
    bad["features.28.weight"] = torch.zeros(512, 256, 3, 3)
    write_stand_in(tmp_path / "bad", "vgg16_imagenet", bad)
    with pytest.raises(ValueError, match=r"features\.28\.weight \(512, 256, 3, 3\)"):
        load_lpips_vgg(ModelStore(tmp_path / "bad"))
    with pytest.raises(ModelFileMissingError, match=r"vgg16-397923af\.pth") as err:
        load_lpips_vgg(ModelStore(tmp_path / "empty"))
    assert REGISTRY["vgg16_imagenet"].url in str(err.value)
    assert ModelStore(tmp_path).available("lpips_vgg_v0.1")  # shipped in the lpips wheel
