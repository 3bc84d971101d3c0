"""StyleGAN2 generator in rosinality's layout (training.priors.stylegan2): the published key
table of ``stylegan2-ffhq-config-f.pt``'s ``g_ema``, a tiny random instance, eq. 1–3 of
Karras et al. 2020, loading and the registry entry."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from infra.models import REGISTRY, ModelFileMissingError, ModelStore
from infra.stand_ins import write_stand_in
from training.priors.stylegan2 import (
    STYLEGAN2_FFHQ,
    ModulatedConv2d,
    StyleGAN2Config,
    StyleGAN2Generator,
    Upsample,
    check_stylegan2_state,
    load_stylegan2,
    load_stylegan2_ffhq,
    random_stylegan2,
    stylegan2_state_shapes,
    upfirdn2d,
)

URL = "https://drive.google.com/file/d/1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT/view?usp=sharing"
# rosinality/stylegan2-pytorch model.py: Generator(1024, 512, 8, channel_multiplier=2).
# Channels per resolution (4..32: 512, 64: 256·2, 128: 128·2, 256: 64·2, 512: 32·2, 1024: 16·2).
FFHQ_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
FFHQ_KEYS = 171
FFHQ_PARAMS = 30_370_060  # parameters of g_ema (buffers: blur kernels and noise maps excluded)
# 64 px, channels 8 (4–32 px) and 4 (64 px, cm = 1): 5 resolutions, 9 styled convs, 10 W+ rows.
TINY = StyleGAN2Config(size=64, style_dim=16, n_mlp=2, channel_multiplier=1, width=64)


def _published_layout(style_dim: int = 512, n_mlp: int = 8) -> dict[str, tuple[int, ...]]:
    """Key → shape of rosinality's ``Generator.state_dict()`` at 1024 px, in its order."""
    d, out = style_dim, {}
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm
        out[f"style.{i}.weight"], out[f"style.{i}.bias"] = (d, d), (d,)
    out["input.input"] = (1, 512, 4, 4)

    def styled(p: str, cin: int, cout: int, up: bool) -> None:
        out[f"{p}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            out[f"{p}.conv.blur.kernel"] = (4, 4)
        out[f"{p}.conv.modulation.weight"], out[f"{p}.conv.modulation.bias"] = (cin, d), (cin,)
        out[f"{p}.noise.weight"], out[f"{p}.activate.bias"] = (1,), (cout,)

    def to_rgb(p: str, cin: int, up: bool) -> None:
        out[f"{p}.bias"] = (1, 3, 1, 1)
        if up:
            out[f"{p}.upsample.kernel"] = (4, 4)
        out[f"{p}.conv.weight"] = (1, 3, cin, 1, 1)
        out[f"{p}.conv.modulation.weight"], out[f"{p}.conv.modulation.bias"] = (cin, d), (cin,)

    styled("conv1", 512, 512, False)
    to_rgb("to_rgb1", 512, False)
    res = [8, 16, 32, 64, 128, 256, 512, 1024]
    for k, r in enumerate(res):
        cin, cout = FFHQ_CHANNELS[r // 2], FFHQ_CHANNELS[r]
        styled(f"convs.{2 * k}", cin, cout, True)
        styled(f"convs.{2 * k + 1}", cout, cout, False)
    for k, r in enumerate(res):
        to_rgb(f"to_rgbs.{k}", FFHQ_CHANNELS[r], True)
    for i in range(17):
        out[f"noises.noise_{i}"] = (1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2))
    return out


def _is_buffer(key: str) -> bool:
    return key.startswith("noises.") or key.endswith(".kernel")


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_stylegan2(TINY, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_state) -> StyleGAN2Generator:
    return load_stylegan2(tiny_state, TINY)


def _wplus(b: int, seed: int, cfg: StyleGAN2Config = TINY) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cfg.n_latent, cfg.style_dim, generator=g)


# --- published layout ----------------------------------------------------------------------


def test_ffhq_config_f_has_the_published_keys_shapes_and_parameter_count():
    cfg = StyleGAN2Config()
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channel_multiplier) == (1024, 512, 8, 2)
    assert cfg.channels == FFHQ_CHANNELS and cfg.n_latent == 18 and cfg.num_layers == 17
    table = _published_layout()
    shapes = stylegan2_state_shapes(cfg)
    assert list(shapes.items()) == list(table.items())  # names, shapes and order
    assert len(table) == FFHQ_KEYS
    spot = {
        "style.1.weight": (512, 512),
        "style.8.bias": (512,),
        "input.input": (1, 512, 4, 4),
        "conv1.conv.weight": (1, 512, 512, 3, 3),
        "conv1.conv.modulation.weight": (512, 512),
        "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
        "convs.0.conv.weight": (1, 512, 512, 3, 3),
        "convs.0.conv.blur.kernel": (4, 4),
        "convs.15.conv.weight": (1, 32, 32, 3, 3),
        "to_rgbs.7.conv.weight": (1, 3, 32, 1, 1),
        "to_rgbs.7.upsample.kernel": (4, 4),
        "noises.noise_0": (1, 1, 4, 4),
        "noises.noise_16": (1, 1, 1024, 1024),
    }
    assert {k: shapes[k] for k in spot} == spot
    assert "style.0.weight" not in shapes and "to_rgbs.8.bias" not in shapes
    n_params = sum(math.prod(s) for k, s in table.items() if not _is_buffer(k))
    assert n_params == FFHQ_PARAMS
    with torch.device("meta"):
        g = StyleGAN2Generator(cfg)
    assert sum(p.numel() for p in g.parameters()) == FFHQ_PARAMS
    assert {k for k, _ in g.named_buffers()} == {k for k in table if _is_buffer(k)}


def test_config_rejects_a_size_outside_the_table():
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Config(size=48)
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Config(size=2048)


# --- tiny model ----------------------------------------------------------------------------


def test_tiny_output_features_and_latent_shapes(tiny):
    assert TINY.n_latent == 10 and TINY.channels[32] == 8 and TINY.channels[64] == 4
    assert 1_000 < sum(p.numel() for p in tiny.parameters()) < 10_000
    with torch.no_grad():
        img, feats = tiny(_wplus(2, 1), return_features=True)
        assert torch.equal(img, tiny(_wplus(2, 1)))
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.std() > 0
    assert [tuple(f.shape) for f in feats] == [
        (2, TINY.channels[r], r, r) for r in (4, 8, 16, 32, 64)
    ]
    with pytest.raises(ValueError, match=r"\(B, 10, 16\)"):
        tiny(torch.zeros(2, 9, 16))
    with pytest.raises(ValueError, match="9 noise maps"):
        tiny(_wplus(1, 1), noise=[None] * 3)


def test_mapping_and_mean_latent(tiny):
    z = torch.randn(5, 16)
    w = tiny.mapping(z)
    assert w.shape == (5, 16) and torch.isfinite(w).all()
    assert torch.allclose(tiny.mapping(z * 7), w, atol=1e-5)  # pixel norm first
    g = torch.Generator().manual_seed(3)
    m = tiny.mean_latent(64, generator=g)
    assert m.shape == (1, 16)
    assert torch.allclose(m, tiny.mean_latent(64, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        tiny.mapping(torch.zeros(2, 8))


def test_stored_noise_is_used_deterministically(tiny):
    w = _wplus(2, 2)
    with torch.no_grad():
        a, b = tiny(w), tiny(w, randomize_noise=False)
        assert torch.equal(a, b)
        assert torch.equal(a, tiny(w, noise=tiny.stored_noise()))
        r1, r2 = tiny(w, randomize_noise=True), tiny(w, randomize_noise=True)
        assert not torch.allclose(r1, r2) and not torch.allclose(r1, a)
        other = [torch.zeros_like(n) for n in tiny.stored_noise()]
        assert not torch.allclose(tiny(w, noise=other), a)


def test_different_styles_give_different_images(tiny):
    w = _wplus(1, 4)
    with torch.no_grad():
        a = tiny(w)
        assert (tiny(_wplus(1, 5)) - a).abs().mean() > 1e-3
        w2 = w.clone()
        w2[:, -1] += 1.0  # only the last ToRGB's style
        assert (tiny(w2) - a).abs().mean() > 1e-4


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, tiny, tiny_state):
    latent_avg = torch.randn(16)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": tiny_state, "latent_avg": latent_avg}, path)
    loaded = load_stylegan2(path, TINY)
    assert torch.equal(loaded.latent_avg, latent_avg) and tiny.latent_avg is None
    assert "latent_avg" not in loaded.state_dict()
    w = _wplus(2, 6)
    with torch.no_grad():
        assert torch.equal(loaded(w), tiny(w))
    assert all(torch.equal(v, tiny_state[k]) for k, v in loaded.state_dict().items())
    # a train.py checkpoint: g, d, g_ema, optimizer states, args (argparse.Namespace)
    opt = torch.optim.Adam(tiny.parameters())
    train_ckpt = {
        "g": tiny_state,
        "d": {"x": torch.zeros(1)},
        "g_ema": tiny_state,
        "g_optim": opt.state_dict(),
        "args": argparse.Namespace(size=64, lr=0.002),
        "ada_aug_p": 0.0,
    }
    torch.save(train_ckpt, tmp_path / "000100.pt")
    with torch.no_grad():
        assert torch.equal(load_stylegan2(tmp_path / "000100.pt", TINY)(w), tiny(w))


def test_strict_loading_names_missing_unexpected_and_wrong_shape_keys(tiny_state):
    bad = dict(tiny_state)
    del bad["conv1.noise.weight"]
    bad["extra.weight"] = torch.zeros(3)
    bad["style.1.weight"] = torch.zeros(16, 8)
    with pytest.raises(ValueError) as err:
        load_stylegan2({"g_ema": bad}, TINY)
    msg = str(err.value)
    assert "missing ['conv1.noise.weight']" in msg
    assert "unexpected ['extra.weight']" in msg
    assert "style.1.weight (16, 8) (expected (16, 16))" in msg
    # non-strict: missing and unexpected are tolerated, a wrong shape is not
    with pytest.raises(ValueError, match=r"style\.1\.weight"):
        check_stylegan2_state(bad, TINY, strict=False)
    bad["style.1.weight"] = tiny_state["style.1.weight"]
    g = load_stylegan2(bad, TINY, strict=False)
    assert torch.equal(g.conv1.noise.weight, torch.zeros(1))
    with pytest.raises(ValueError, match="missing"):  # the published config needs width 1
        check_stylegan2_state(tiny_state, StyleGAN2Config())


# --- ops and eq. 1–3 -----------------------------------------------------------------------


def test_upsample_preserves_constants_and_is_half_pixel_aligned():
    up = Upsample()
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 2, 8, 8)
    out = up(ramp)
    assert out.shape == (1, 2, 16, 16)
    inner = out[:, :, 4:-4, 2:-2]  # away from the zero padding
    j = torch.arange(16.0)[2:-2]
    assert torch.allclose(inner, (j / 2 - 0.25).expand_as(inner), atol=1e-5)
    down = upfirdn2d(torch.ones(1, 1, 8, 8), torch.full((2, 2), 0.25), down=2)
    assert down.shape == (1, 1, 4, 4) and torch.allclose(down, torch.ones(1))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_equals_per_sample_modulated_weights(upsample, demodulate):
    """conv(x·s)·d equals convolving each sample with w'' of eq. 1 and 3 (the grouped form)."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, 4, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 4)
    with torch.no_grad():
        out = conv(x, style)
        s = conv.modulation(style)
        ref = []
        for b in range(3):
            w = conv.weight[0] * conv.scale * s[b].view(1, 6, 1, 1)  # eq. 1
            if demodulate:
                w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)  # eq. 3
            if upsample:
                o = F.conv_transpose2d(x[b : b + 1], w.transpose(0, 1), stride=2)
                o = upfirdn2d(o, conv.blur.kernel, pad=(1, 1))
            else:
                o = F.conv2d(x[b : b + 1], w, padding=1)
            ref.append(o)
    side = 16 if upsample else 8
    assert out.shape == (3, 5, side, side)
    assert torch.allclose(out, torch.cat(ref), atol=1e-5)


def test_demodulation_gives_unit_std_for_unit_variance_input():
    """Karras et al. 2020 eq. 2–3: with i.i.d. unit-variance inputs the output of channel j
    has std σ_j = sqrt(Σ_{i,k} w'_ijk²) before and 1 after demodulation."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(32, 8, 3, 8, demodulate=True)
    x, style = torch.randn(4, 32, 34, 34), 3 * torch.randn(4, 8)
    with torch.no_grad():
        std = conv(x, style)[:, :, 1:-1, 1:-1].std(dim=(2, 3))  # interior: no zero padding
        conv.demodulate = False
        raw = conv(x, style)[:, :, 1:-1, 1:-1].std(dim=(2, 3))
        s = conv.modulation(style)
        w1 = conv.weight[0] * conv.scale * s.view(4, 1, 32, 1, 1)  # eq. 1, (B, out, in, k, k)
        sigma = w1.square().sum(dim=(2, 3, 4)).sqrt()  # eq. 2
    assert torch.allclose(std, torch.ones_like(std), atol=0.1)
    assert torch.allclose(raw / sigma, torch.ones_like(raw), atol=0.1)
    assert (sigma - 1).abs().max() > 0.5  # the check above is not vacuous


# --- registry ------------------------------------------------------------------------------


def test_registry_entry_and_missing_file(tmp_path):
    spec = REGISTRY[STYLEGAN2_FFHQ]
    assert (spec.task, spec.file, spec.sha256, spec.url) == (
        "prior",
        "stylegan2/stylegan2-ffhq-config-f.pt",
        None,
        URL,
    )
    assert spec.input.shape == (None, 18, 512) and "NVIDIA Source Code License-NC" in spec.licence
    with pytest.raises(ModelFileMissingError) as err:
        load_stylegan2_ffhq(ModelStore(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / spec.file) in msg and URL in msg


def test_a_test_size_stand_in_loads_through_the_registry(tmp_path, tiny, tiny_state, caplog):
    write_stand_in(tmp_path, STYLEGAN2_FFHQ, {"g_ema": tiny_state, "latent_avg": torch.zeros(16)})
    with caplog.at_level("WARNING"):
        g = load_stylegan2_ffhq(ModelStore(tmp_path), TINY)
    assert "stand-in" in caplog.text
    w = _wplus(1, 7)
    with torch.no_grad():
        assert torch.equal(g(w), tiny(w))
    with pytest.raises(ValueError, match="missing"):  # at the published config it is refused
        load_stylegan2_ffhq(ModelStore(tmp_path))
