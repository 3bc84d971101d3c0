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
    cfg = AEINetConfig(image_size=256, id_dim=512, base_channels=32, max_channels=1024)
    assert cfg.encoder_channels == [32, 64, 128, 256, 512, 1024, 1024]
    assert cfg.attribute_channels == [1024, 2048, 1024, 512, 256, 128, 64, 64]


def test_aei_net_shapes():
    cfg = AEINetConfig(image_size=32, id_dim=16, base_channels=4, max_channels=16)
    net = AEINet(cfg)
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
