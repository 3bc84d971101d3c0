import math

import pytest
import torch

from training.losses import (
    attribute_loss,
    hinge_d_loss,
    hinge_g_loss,
    identity_loss,
    reconstruction_loss,
)
from training.networks.aei_net import AADLayer, AEINet, AEINetConfig
from training.networks.discriminator import DiscriminatorConfig, MultiscaleDiscriminator, logits


def test_paper_config_matches_faceshifter_channels():
    cfg = AEINetConfig(image_size=256, base_channels=32, max_channels=1024)
    assert cfg.encoder_channels == [32, 64, 128, 256, 512, 1024, 1024]
    assert cfg.attribute_channels == [1024, 2048, 1024, 512, 256, 128, 64, 64]


def test_aei_net_shapes():
    cfg = AEINetConfig(image_size=32, base_channels=4, max_channels=16)
    net = AEINet(cfg, id_dim=16)
    y, z_att = net(torch.randn(3, 3, 32, 32), torch.randn(3, 16))
    assert y.shape == (3, 3, 32, 32) and y.abs().max() <= 1
    assert [t.shape[-1] for t in z_att] == [2, 4, 8, 16, 32]
    assert [t.shape[1] for t in z_att] == cfg.attribute_channels
    with pytest.raises(ValueError):
        net(torch.randn(3, 3, 64, 64), torch.randn(3, 16))
    with pytest.raises(ValueError):
        net(torch.randn(3, 3, 32, 32), torch.randn(3, 8))


def test_aad_layer_blends_attribute_and_identity_paths():
    layer = AADLayer(channels=4, att_channels=2, id_dim=3)
    h, z_att, z_id = torch.randn(2, 4, 5, 5), torch.randn(2, 2, 5, 5), torch.randn(2, 3)
    # Mask → 0 gives the attribute path A, mask → 1 the identity path I (eq. 4.7).
    with torch.no_grad():
        layer.mask.weight.zero_()
        layer.mask.bias.fill_(-50.0)
        out_a = layer(h, z_att, z_id)
        layer.mask.bias.fill_(50.0)
        out_i = layer(h, z_att, z_id)
        h_bar = layer.norm(h)
    torch.testing.assert_close(out_a, layer.gamma_att(z_att) * h_bar + layer.beta_att(z_att))
    torch.testing.assert_close(
        out_i, layer.gamma_id(z_id)[..., None, None] * h_bar + layer.beta_id(z_id)[..., None, None]
    )


def test_multiscale_discriminator_scales():
    d = MultiscaleDiscriminator(
        DiscriminatorConfig(base_channels=4, max_channels=8, num_layers=2, num_scales=3)
    )
    out = logits(d(torch.randn(2, 3, 64, 64)))
    assert len(out) == 3 and all(o.shape[:2] == (2, 1) for o in out)
    assert out[0].shape[-1] > out[1].shape[-1] > out[2].shape[-1]


def test_losses_known_values():
    real, fake = [torch.full((1, 1, 2, 2), 2.0)], [torch.full((1, 1, 2, 2), -0.5)]
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.0 + 0.5)
    assert hinge_g_loss(fake).item() == pytest.approx(0.5)
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert identity_loss(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_loss(e, -e).item() == pytest.approx(2.0, abs=1e-6)
    a = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 4, 4)]
    b = [torch.ones(1, 2, 2, 2), torch.full((1, 1, 4, 4), 2.0)]
    assert attribute_loss(a, b).item() == pytest.approx(0.5 * (1.0 + 4.0))
    y, x = torch.zeros(2, 3, 2, 2), torch.stack([torch.ones(3, 2, 2), 3 * torch.ones(3, 2, 2)])
    assert reconstruction_loss(y, x, torch.tensor([True, False])).item() == pytest.approx(0.5)
    assert reconstruction_loss(y, x, torch.tensor([False, False])).item() == 0.0


def test_aad_units_and_simswap_shapes():
    from training.networks.aei_net import AADResBlk
    from training.networks.simswap import SimSwapGenerator, SimSwapGeneratorConfig

    blk = AADResBlk(8, 4, att_channels=3, id_dim=5, units=3)
    assert len(blk.aad) == 3 and blk.conv[-1].out_channels == 4
    assert blk(torch.randn(2, 8, 6, 6), torch.randn(2, 3, 6, 6), torch.randn(2, 5)).shape == (
        2,
        4,
        6,
        6,
    )
    g = SimSwapGenerator(
        SimSwapGeneratorConfig(
            image_size=32, base_channels=4, max_channels=16, num_down=3, id_blocks=2
        ),
        id_dim=6,
    )
    y, extra = g(torch.randn(2, 3, 32, 32), torch.randn(2, 6))
    assert y.shape == (2, 3, 32, 32) and extra is None and y.abs().max() <= 1
    with pytest.raises(ValueError):
        SimSwapGeneratorConfig(image_size=36, num_down=3)
    # identity changes the output through AdaIN
    z = torch.randn(1, 6)
    g.eval()
    assert not torch.allclose(g(torch.ones(1, 3, 32, 32), z)[0], g(torch.ones(1, 3, 32, 32), -z)[0])


def test_simswap_and_ghost_losses_known_values():
    from training.losses import (
        eye_heatmap_loss,
        gaussian_heatmaps,
        gradient_penalty,
        hinge_g_real_loss,
        masked_l1,
        weak_feature_matching,
    )

    y, x = torch.zeros(2, 3, 2, 2), torch.stack([torch.ones(3, 2, 2), 3 * torch.ones(3, 2, 2)])
    assert masked_l1(y, x, torch.tensor([False, True])).item() == pytest.approx(3.0)
    fake = [[torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 2, 2), torch.zeros(1, 1, 1, 1)]]
    real = [[torch.ones(1, 2, 4, 4), torch.full((1, 2, 2, 2), 3.0), torch.ones(1, 1, 1, 1)]]
    assert weak_feature_matching(fake, real, from_layer=-1).item() == pytest.approx(
        2.0
    )  # layer 1 only
    assert weak_feature_matching(fake, real, from_layer=0).item() == pytest.approx(3.0)
    # D(x) = 3·mean(x) over n = 12 values: per-sample gradient 3/12 everywhere, norm 3/sqrt(12)
    real_img, fake_img = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    gp = gradient_penalty(lambda t: [3 * t.mean(dim=(1, 2, 3))[:, None]], real_img, fake_img)
    assert gp.item() == pytest.approx((3 / 12**0.5 - 1) ** 2, rel=1e-5)
    # a point on the centre of pixel (row 2, col 4) of an 8x8 map: peak 1 there
    hm = gaussian_heatmaps(torch.tensor([[[4.5 / 8, 2.5 / 8]]]), size=8, sigma=1.0)
    assert hm.shape == (1, 1, 8, 8) and hm[0, 0].argmax().item() == 2 * 8 + 4
    assert hm[0, 0, 2, 4].item() == pytest.approx(1.0) and hm[0, 0, 2, 5].item() == pytest.approx(
        math.exp(-0.5)
    )
    pts = torch.rand(2, 12, 2)
    assert eye_heatmap_loss(pts, pts, 16, 1.5).item() == pytest.approx(0.0)
    assert eye_heatmap_loss(pts, pts.flip(1), 16, 1.5).item() > 0
    logits = [torch.full((2, 1, 2, 2), 0.5)]
    assert hinge_g_real_loss(logits, torch.tensor([True, False])).item() == pytest.approx(0.5)
