"""pSp / e4e encoder in the published layout (training.priors.psp): the key table of pSp's
``GradualStyleEncoder(50, 'ir_se')``, a tiny random instance, the published checkpoint format,
strict loading and the registry entries."""

from __future__ import annotations

import argparse
import math
import pickle

import pytest
import torch

from infra.models import REGISTRY, ModelFileMissingError, ModelStore
from infra.stand_ins import write_stand_in
from training.priors.psp import (
    E4E_FFHQ,
    PSP_FFHQ,
    PSPEncoder,
    PSPEncoderConfig,
    check_psp_state,
    load_psp_encoder,
    load_psp_ffhq_encoder,
    psp_state_shapes,
    random_psp_encoder,
)

PSP_URL = "https://drive.google.com/file/d/1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0/view?usp=sharing"
E4E_URL = "https://drive.google.com/file/d/1cUv_reLE6k3604or78EranS7XzuVMWeO/view?usp=sharing"
PUBLISHED_KEYS = 621
PUBLISHED_PARAMS = 267_136_704  # parameters (BN running statistics and counters excluded)
# channels 2, 4, 8, 16; style heads 16 → 8; the full 24-unit body and 18 heads.
TINY = PSPEncoderConfig(width=32, style_dim=8)


def _published_layout() -> dict[str, tuple[int, ...]]:
    """Key → shape of pSp's ``GradualStyleEncoder(50, 'ir_se').state_dict()``, in its order,
    written from pSp's ``psp_encoders.py`` and ``helpers.py`` (``get_blocks(50)``,
    ``bottleneck_IR_SE``: shortcut first, then ``res_layer``; ``SEModule(depth, 16)``;
    ``GradualStyleBlock(512, 512, spatial)`` with log2(spatial) convs)."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(p: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"{p}.{k}"] = (c,)
        out[f"{p}.num_batches_tracked"] = ()

    out["input_layer.0.weight"] = (64, 3, 3, 3)
    bn("input_layer.1", 64)
    out["input_layer.2.weight"] = (64,)
    blocks = [(64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)]  # get_blocks(50)
    i = 0
    for in_channel, depth, num_units in blocks:
        for u in range(num_units):
            cin, p = (in_channel if u == 0 else depth), f"body.{i}"
            if cin != depth:  # else MaxPool2d(1, stride): no keys
                out[f"{p}.shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", cin)
            out[f"{p}.res_layer.1.weight"] = (depth, cin, 3, 3)
            out[f"{p}.res_layer.2.weight"] = (depth,)
            out[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            bn(f"{p}.res_layer.4", depth)
            out[f"{p}.res_layer.5.fc1.weight"] = (depth // 16, depth, 1, 1)
            out[f"{p}.res_layer.5.fc2.weight"] = (depth, depth // 16, 1, 1)
            i += 1
    for s in range(18):
        spatial = 16 if s < 3 else 32 if s < 7 else 64
        for k in range(int(math.log2(spatial))):
            out[f"styles.{s}.convs.{2 * k}.weight"] = (512, 512, 3, 3)
            out[f"styles.{s}.convs.{2 * k}.bias"] = (512,)
        out[f"styles.{s}.linear.weight"], out[f"styles.{s}.linear.bias"] = (512, 512), (512,)
    out["latlayer1.weight"], out["latlayer1.bias"] = (512, 256, 1, 1), (512,)
    out["latlayer2.weight"], out["latlayer2.bias"] = (512, 128, 1, 1), (512,)
    return out


def _is_buffer(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a loaded 2-core machine OpenMP's spinning makes these tiny
    convolutions ~100× slower with two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_psp_encoder(TINY, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_state) -> PSPEncoder:
    return load_psp_encoder(tiny_state, TINY)[0]


def _images(b: int, seed: int, side: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, side, side, generator=g) * 2 - 1


def _checkpoint(state: dict, latent_avg: torch.Tensor) -> dict:
    """pSp's / e4e's ``Coach.__get_save_dict``: the whole pSp state dict, opts as a dict."""
    sd = {f"encoder.{k}": v for k, v in state.items()}
    sd["decoder.style.1.weight"] = torch.zeros(8, 8)  # rosinality keys, ignored here
    sd["decoder.input.input"] = torch.zeros(1, 8, 4, 4)
    opts = {"encoder_type": "GradualStyleEncoder", "start_from_latent_avg": True, "lr": 1e-4}
    return {"state_dict": sd, "opts": opts, "latent_avg": latent_avg}


# --- published layout ----------------------------------------------------------------------


def test_ir_se_50_encoder_has_the_published_keys_shapes_and_parameter_count():
    cfg = PSPEncoderConfig()
    assert (cfg.num_layers, cfg.input_nc, cfg.n_styles, cfg.style_dim) == (50, 3, 18, 512)
    assert cfg.channels == (64, 128, 256, 512) and cfg.taps == (6, 20, 23)
    table = _published_layout()
    shapes = psp_state_shapes(cfg)
    assert list(shapes.items()) == list(table.items())  # names, shapes and order
    assert len(table) == PUBLISHED_KEYS
    spot = {
        "input_layer.0.weight": (64, 3, 3, 3),
        "input_layer.2.weight": (64,),
        "body.0.res_layer.0.weight": (64,),
        "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
        "body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),  # first unit of stage 2
        "body.3.shortcut_layer.1.running_var": (128,),
        "body.7.shortcut_layer.0.weight": (256, 128, 1, 1),  # stage 3
        "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),  # stage 4
        "body.23.res_layer.3.weight": (512, 512, 3, 3),
        "body.23.res_layer.4.num_batches_tracked": (),
        "body.23.res_layer.5.fc1.weight": (32, 512, 1, 1),
        "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
        "styles.0.convs.0.weight": (512, 512, 3, 3),
        "styles.0.convs.6.bias": (512,),  # coarse: 4 convs
        "styles.6.convs.8.weight": (512, 512, 3, 3),  # medium: 5
        "styles.17.convs.10.weight": (512, 512, 3, 3),  # fine: 6
        "styles.17.linear.weight": (512, 512),
        "styles.17.linear.bias": (512,),
        "latlayer1.weight": (512, 256, 1, 1),
        "latlayer2.weight": (512, 128, 1, 1),
    }
    assert {k: shapes[k] for k in spot} == spot
    absent = ("body.0.shortcut_layer.0.weight", "styles.0.convs.8.weight", "styles.18.linear.bias")
    assert not any(k in shapes for k in absent)  # stage 1 shortcut is a max-pool
    assert sum(math.prod(s) for k, s in table.items() if not _is_buffer(k)) == PUBLISHED_PARAMS
    with torch.device("meta"):
        enc = PSPEncoder(cfg)
    assert sum(p.numel() for p in enc.parameters()) == PUBLISHED_PARAMS
    assert {k for k, _ in enc.named_buffers()} == {k for k in table if _is_buffer(k)}


def test_published_size_shapes_on_the_meta_device():
    """At 256 px: W+ (B, 18, 512) and MAttFace's F_c, F_m, F_f (seed 004 §3.1, eq. 1)."""
    with torch.device("meta"):
        enc = PSPEncoder(PSPEncoderConfig()).eval()
        codes, feats = enc(torch.empty(2, 3, 256, 256), return_features=True)
    assert codes.shape == (2, 18, 512)
    want = [(128, 64, 64), (256, 32, 32), (512, 16, 16)]
    assert [tuple(f.shape[1:]) for f in feats] == want == enc.feature_shapes(256)


# --- tiny model ----------------------------------------------------------------------------


def test_tiny_output_and_feature_shapes(tiny):
    assert TINY.channels == (2, 4, 8, 16)
    assert 50_000 < sum(p.numel() for p in tiny.parameters()) < 200_000
    x = _images(2, 1)
    with torch.no_grad():
        codes, (c1, c2, c3) = tiny(x, return_features=True)
        assert torch.equal(codes, tiny(x))
        assert torch.equal(codes, tiny.map_to_styles(c1, c2, c3))
        other = tiny(_images(2, 2))
        odd = tiny(_images(1, 3, side=40))  # any side in [16, 256]; maps rounded up
    assert codes.shape == (2, 18, 8) and codes.dtype == torch.float32
    assert torch.isfinite(codes).all() and codes.std() > 0
    assert (c1.shape, c2.shape, c3.shape) == ((2, 4, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4))
    assert [tuple(c.shape[1:]) for c in (c1, c2, c3)] == tiny.feature_shapes(64)
    assert (other - codes).abs().mean() > 0.05 * codes.abs().mean()
    assert odd.shape == (1, 18, 8)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\[16, 256\]"):
        tiny(torch.zeros(1, 3, 512, 512))
    with pytest.raises(ValueError, match="c2"):
        tiny.map_to_styles(c1, c1, c3)


def test_e4e_codes_are_w_plus_offsets_of_the_same_heads(tiny_state, tiny):
    """Tov et al. 2021: row 0 is w = head_0(c3), row i is w + Δ_i with Δ_i = head_i."""
    e4e, _ = load_psp_encoder(tiny_state, PSPEncoderConfig(width=32, style_dim=8, kind="e4e"))
    x = _images(2, 4)
    with torch.no_grad():
        heads, w = tiny(x), e4e(x)
    assert torch.equal(w[:, 0], heads[:, 0])
    assert torch.allclose(w[:, 1:], heads[:, :1] + heads[:, 1:], atol=1e-6)


# --- loading -------------------------------------------------------------------------------


def test_published_format_checkpoint_loads_and_gives_identical_outputs(tmp_path, tiny, tiny_state):
    latent_avg = torch.randn(18, 8)
    path = tmp_path / "psp.pt"
    torch.save(_checkpoint(tiny_state, latent_avg), path)
    loaded, avg = load_psp_encoder(path, TINY)  # weights_only: opts is a plain dict
    assert torch.equal(avg, latent_avg) and torch.equal(loaded.latent_avg, latent_avg)
    assert tiny.latent_avg is None and "latent_avg" not in loaded.state_dict()
    assert not loaded.training
    assert all(torch.equal(v, tiny_state[k]) for k, v in loaded.state_dict().items())
    x = _images(2, 5)
    with torch.no_grad():
        codes = tiny(x)
        assert torch.equal(loaded(x), codes)
        assert torch.equal(loaded(x, add_latent_avg=True), codes + latent_avg)
    with pytest.raises(ValueError, match="no latent_avg"):
        tiny(x, add_latent_avg=True)
    # a (style_dim,) average (a trainer's mean_latent) is repeated per row
    _, avg1 = load_psp_encoder(_checkpoint(tiny_state, latent_avg[0]), TINY)
    assert avg1.shape == (18, 8) and torch.equal(avg1[17], latent_avg[0])
    with pytest.raises(ValueError, match=r"latent_avg of shape \(3, 8\)"):
        load_psp_encoder(_checkpoint(tiny_state, torch.zeros(3, 8)), TINY)
    # opts saved as an argparse.Namespace is outside the weights-only set
    bad = _checkpoint(tiny_state, latent_avg) | {"opts": argparse.Namespace(lr=1.0)}
    torch.save(bad, tmp_path / "namespace.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_psp_encoder(tmp_path / "namespace.pt", TINY)


def test_strict_loading_names_missing_unexpected_and_wrong_shape_keys(tiny_state):
    bad = dict(tiny_state)
    del bad["body.5.res_layer.2.weight"]
    bad["extra.weight"] = torch.zeros(3)
    bad["latlayer2.weight"] = torch.zeros(16, 4, 3, 3)
    with pytest.raises(ValueError) as err:
        load_psp_encoder({"state_dict": {f"encoder.{k}": v for k, v in bad.items()}}, TINY)
    msg = str(err.value)
    assert "missing ['body.5.res_layer.2.weight']" in msg
    assert "unexpected ['extra.weight']" in msg
    assert "latlayer2.weight (16, 4, 3, 3) (expected (16, 4, 1, 1))" in msg
    # non-strict: missing and unexpected are tolerated, a wrong shape is not
    with pytest.raises(ValueError, match=r"latlayer2\.weight"):
        check_psp_state(bad, TINY, strict=False)
    bad["latlayer2.weight"] = tiny_state["latlayer2.weight"]
    enc, avg = load_psp_encoder(bad, TINY, strict=False)  # a bare encoder state dict
    assert avg is None and enc.body[5].res_layer[2].weight.shape == (4,)
    with pytest.raises(ValueError, match="missing"):  # the published config needs width 1
        check_psp_state(tiny_state, PSPEncoderConfig())


# --- registry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "file", "url"),
    [
        (PSP_FFHQ, "psp", "psp/psp_ffhq_encode.pt", PSP_URL),
        (E4E_FFHQ, "e4e", "psp/e4e_ffhq_encode.pt", E4E_URL),
    ],
)
def test_registry_entries_and_missing_file(tmp_path, name, kind, file, url):
    spec = REGISTRY[name]
    assert (spec.task, spec.file, spec.sha256, spec.url) == ("prior", file, None, url)
    assert spec.input.shape == (None, 3, 256, 256)
    assert (spec.input.mean, spec.input.std, spec.input.color) == (127.5, 127.5, "RGB")
    assert "MIT" in spec.licence and "License-NC" in spec.licence
    with pytest.raises(ModelFileMissingError) as err:
        load_psp_ffhq_encoder(ModelStore(tmp_path), kind=kind)
    msg = str(err.value)
    assert str(tmp_path / spec.file) in msg and url in msg


def test_a_test_size_stand_in_loads_through_the_registry(tmp_path, tiny, tiny_state, caplog):
    write_stand_in(tmp_path, PSP_FFHQ, _checkpoint(tiny_state, torch.zeros(18, 8)))
    with caplog.at_level("WARNING"):
        enc, avg = load_psp_ffhq_encoder(ModelStore(tmp_path), cfg=TINY)
    assert "stand-in" in caplog.text and torch.equal(avg, torch.zeros(18, 8))
    x = _images(1, 7)
    with torch.no_grad():
        assert torch.equal(enc(x), tiny(x))
    with pytest.raises(ValueError, match="missing"):  # at the published config it is refused
        load_psp_ffhq_encoder(ModelStore(tmp_path))
