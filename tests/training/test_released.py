"""Released GHOST and SimSwap weights: key maps against the reference implementations' key
names and shapes, forward passes against the reference computation, the one-time conversion
of a pickled module, and the errors a user sees.

The reference names and shapes below are written from reading the reference code
(ai-forever/ghost ``network/AEI_Net.py``, ``network/AADLayer.py``; insightface
``recognition/arcface_torch/backbones/iresnet.py``; neuralchen/SimSwap
``models/fs_networks.py``, ``models/arcface_models.py``); the ``_ref_*`` functions restate
the reference forward passes with ``torch.nn.functional`` on a state dict keyed by those
names, so the project modules are checked against them, not against themselves.
"""

from __future__ import annotations

import math
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from infra.models import REGISTRY, ModelFileMissingError, ModelStore
from training.networks.aei_net import AEINet, AEINetConfig
from training.networks.simswap import SimSwapGenerator, SimSwapGeneratorConfig
from training.released import RELEASED, load_released
from training.released.base import (
    SAME_NAMES,
    ReleasedWeightsError,
    build_loaded,
    load_plain_state_dict,
    released_file,
)
from training.released.convert import convert_release, read_pickled_state_dict
from training.released.ghost import GHOST_RELEASE, GHOST_RULES, GhostRelease, ghost_key_map
from training.released.iresnet import IRESNET100_LAYERS, IResNet
from training.released.simswap import (
    SIMSWAP_224,
    SimSwapRelease,
    simswap_key_map,
    simswap_rules,
)
from training.released.simswap_arcface import SimSwapArcFace, arch_from_state_dict

# ---- reference key names and shapes (data read from the reference code) ---------------


def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _aad(prefix: str, c_x: int, c_attr: int, c_id: int) -> dict[str, tuple]:
    """ghost ``AADLayer(c_x, attr_c, c_id)``: conv1/conv2 1×1 attr→x, fc1/fc2 id→x, conv_h."""
    return {
        f"{prefix}.conv1.weight": (c_x, c_attr, 1, 1),
        f"{prefix}.conv1.bias": (c_x,),
        f"{prefix}.conv2.weight": (c_x, c_attr, 1, 1),
        f"{prefix}.conv2.bias": (c_x,),
        f"{prefix}.fc1.weight": (c_x, c_id),
        f"{prefix}.fc1.bias": (c_x,),
        f"{prefix}.fc2.weight": (c_x, c_id),
        f"{prefix}.fc2.bias": (c_x,),
        f"{prefix}.conv_h.weight": (1, c_x, 1, 1),
        f"{prefix}.conv_h.bias": (1,),
    }


#: ghost ``MLAttrEncoder('unet')``: conv4x4 channels and deconv4x4 (in, out).
GHOST_ENCODER = [3, 32, 64, 128, 256, 512, 1024, 1024]
GHOST_DECONV = [(1024, 1024), (2048, 512), (1024, 256), (512, 128), (256, 64), (128, 32)]
#: ghost ``AADGenerator('unet')``: AAD_ResBlk(cin, cout, c_attr).
GHOST_BLOCKS = [
    (1024, 1024, 1024),
    (1024, 1024, 2048),
    (1024, 1024, 1024),
    (1024, 512, 512),
    (512, 256, 256),
    (256, 128, 128),
    (128, 64, 64),
    (64, 3, 64),
]


def ghost_reference_shapes(num_blocks: int = 2, c_id: int = 512) -> dict[str, tuple]:
    """Every key of ``AEI_Net('unet', num_blocks, c_id).state_dict()`` with its shape."""
    s: dict[str, tuple] = {}
    for i in range(1, 8):
        cin, cout = GHOST_ENCODER[i - 1], GHOST_ENCODER[i]
        s[f"encoder.conv{i}.0.weight"] = (cout, cin, 4, 4)
        s |= _bn(f"encoder.conv{i}.1", cout)
    for j, (cin, cout) in enumerate(GHOST_DECONV, start=1):
        s[f"encoder.deconv{j}.deconv.weight"] = (cin, cout, 4, 4)  # ConvTranspose: (in, out)
        s |= _bn(f"encoder.deconv{j}.bn", cout)
    s["generator.up1.weight"], s["generator.up1.bias"] = (c_id, 1024, 2, 2), (1024,)
    for k, (cin, cout, c_attr) in enumerate(GHOST_BLOCKS, start=1):
        p = f"generator.AADBlk{k}"
        for u in range(num_blocks):
            s |= _aad(f"{p}.add_blocks.{3 * u}", cin, c_attr, c_id)
            out = cin if u < num_blocks - 1 else cout
            s[f"{p}.add_blocks.{3 * u + 2}.weight"] = (out, cin, 3, 3)
        if cin != cout:
            s |= _aad(f"{p}.last_add_block.0", cin, c_attr, c_id)
            s[f"{p}.last_add_block.2.weight"] = (cout, cin, 3, 3)
    return s


def iresnet_reference_shapes(layers=IRESNET100_LAYERS, num_features=512) -> dict[str, tuple]:
    """Every key of arcface_torch ``IResNet(IBasicBlock, layers)`` with its shape."""
    s = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "prelu.weight": (64,)}
    cin = 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True), start=1):
        for b in range(n):
            p, c = f"layer{i}.{b}", cin if b == 0 else planes
            s |= _bn(f"{p}.bn1", c) | {f"{p}.conv1.weight": (planes, c, 3, 3)}
            s |= _bn(f"{p}.bn2", planes) | {f"{p}.prelu.weight": (planes,)}
            s |= {f"{p}.conv2.weight": (planes, planes, 3, 3)} | _bn(f"{p}.bn3", planes)
            if b == 0:  # every stage starts with stride 2
                s[f"{p}.downsample.0.weight"] = (planes, c, 1, 1)
                s |= _bn(f"{p}.downsample.1", planes)
        cin = planes
    s |= _bn("bn2", 512) | {"fc.weight": (num_features, 512 * 49), "fc.bias": (num_features,)}
    return s | _bn("features", num_features)


def simswap_reference_shapes(n_blocks: int = 9, latent: int = 512) -> dict[str, tuple]:
    """Every key of ``fs_networks.Generator_Adain_Upsample(3, 3, latent, n_blocks,
    deep=False)`` with its shape."""
    s = {"first_layer.1.weight": (64, 3, 7, 7), "first_layer.1.bias": (64,)}
    s |= _bn("first_layer.2", 64)
    for i, (cin, cout) in enumerate([(64, 128), (128, 256), (256, 512)], start=1):
        s |= {f"down{i}.0.weight": (cout, cin, 3, 3), f"down{i}.0.bias": (cout,)}
        s |= _bn(f"down{i}.1", cout)
    for b in range(n_blocks):
        for n in (1, 2):
            p = f"BottleNeck.{b}"
            s |= {f"{p}.conv{n}.1.weight": (512, 512, 3, 3), f"{p}.conv{n}.1.bias": (512,)}
            s |= {f"{p}.style{n}.linear.weight": (1024, latent)}
            s |= {f"{p}.style{n}.linear.bias": (1024,)}
    for i, (cin, cout) in zip((3, 2, 1), [(512, 256), (256, 128), (128, 64)], strict=True):
        s |= {f"up{i}.1.weight": (cout, cin, 3, 3), f"up{i}.1.bias": (cout,)}
        s |= _bn(f"up{i}.2", cout)
    return s | {"last_layer.1.weight": (3, 64, 7, 7), "last_layer.1.bias": (3,)}


def simswap_arcface_reference_shapes(layers, use_se: bool) -> dict[str, tuple]:
    """Every key of SimSwap ``arcface_models.ResNet(IRBlock, layers, use_se)``."""
    s = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "prelu.weight": (1,)}
    inplanes = 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True), start=1):
        for b in range(n):
            p, c = f"layer{i}.{b}", inplanes if b == 0 else planes
            s |= _bn(f"{p}.bn0", c) | {f"{p}.conv1.weight": (c, c, 3, 3)} | _bn(f"{p}.bn1", c)
            s |= {f"{p}.prelu.weight": (1,), f"{p}.conv2.weight": (planes, c, 3, 3)}
            s |= _bn(f"{p}.bn2", planes)
            if use_se:
                r = planes // 16
                s |= {f"{p}.se.fc.0.weight": (r, planes), f"{p}.se.fc.0.bias": (r,)}
                s |= {f"{p}.se.fc.1.weight": (1,), f"{p}.se.fc.2.weight": (planes, r)}
                s |= {f"{p}.se.fc.2.bias": (planes,)}
            if b == 0 and (i > 1 or c != planes):
                s[f"{p}.downsample.0.weight"] = (planes, c, 1, 1)
                s |= _bn(f"{p}.downsample.1", planes)
        inplanes = planes
    s |= _bn("bn2", 512) | {"fc.weight": (512, 512 * 49), "fc.bias": (512,)}
    return s | _bn("bn3", 512)


def _empty(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {
        k: torch.zeros((), dtype=torch.long) if k.endswith("tracked") else torch.empty(v)
        for k, v in shapes.items()
    }


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random (so a wrong map or op cannot hide)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                fan = t[0].numel() if t.ndim > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan))
    return module.eval()


def _to_reference(module: nn.Module, mapping: dict[str, str]) -> dict[str, torch.Tensor]:
    own = module.state_dict()
    return {ref: own[ours].clone() for ref, ours in mapping.items()}


# ---- key maps at the released sizes ------------------------------------------------------


def test_ghost_key_map_covers_the_release_with_equal_shapes():
    ref = ghost_reference_shapes()
    mapping = ghost_key_map(GHOST_RELEASE)
    assert set(mapping) == set(ref)  # every release key used, every project key mapped
    own = {k: tuple(v.shape) for k, v in _meta(lambda: AEINet(GHOST_RELEASE, 512)).items()}
    assert set(mapping.values()) == set(own)
    assert all(own[mapping[k]] == shape for k, shape in ref.items())
    assert sum(math.prod(s) for s in ref.values()) > 184e6  # the paper-size generator


def test_simswap_key_map_covers_the_release_with_equal_shapes():
    ref = simswap_reference_shapes()
    mapping = simswap_key_map(SIMSWAP_224)
    assert set(mapping) == set(ref)
    own = {k: tuple(v.shape) for k, v in _meta(lambda: SimSwapGenerator(SIMSWAP_224, 512)).items()}
    assert set(mapping.values()) == set(own)
    assert all(own[mapping[k]] == shape for k, shape in ref.items())


def test_arcface_backbones_use_the_published_names():
    own = {k: tuple(v.shape) for k, v in _meta(lambda: IResNet(IRESNET100_LAYERS)).items()}
    assert own == iresnet_reference_shapes()
    for layers, use_se in [((3, 4, 23, 3), True), ((2, 2, 2, 2), False)]:
        ref = simswap_arcface_reference_shapes(layers, use_se)
        net = _meta(lambda layers=layers, use_se=use_se: SimSwapArcFace(layers, use_se))
        own = {k: tuple(v.shape) for k, v in net.items()}
        assert own == ref
        assert arch_from_state_dict(_empty(ref)) == (layers, use_se)


def _meta(factory) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return factory().state_dict()


def test_paper_size_releases_load_strictly_through_the_key_maps():
    """State dicts with the reference names and shapes (uninitialised memory) load into the
    project modules with strict=True; an extra or a missing key is named."""
    ghost = build_loaded(
        lambda: AEINet(GHOST_RELEASE, 512), _empty(ghost_reference_shapes()), GHOST_RULES, "G"
    )
    assert ghost.generator.blocks[0].aad[1].gamma_id.weight.shape == (1024, 512)
    build_loaded(IResNet, _empty(iresnet_reference_shapes()), SAME_NAMES, "arcface")
    arc = simswap_arcface_reference_shapes((3, 4, 23, 3), True)
    build_loaded(lambda: SimSwapArcFace((3, 4, 23, 3), True), _empty(arc), SAME_NAMES, "arc")
    rules = simswap_rules(SIMSWAP_224.num_down)
    factory = lambda: SimSwapGenerator(SIMSWAP_224, 512)  # noqa: E731
    state = _empty(simswap_reference_shapes())
    assert build_loaded(factory, state, rules, "G").head.weight.shape == (3, 64, 7, 7)
    state["BottleNeck.9.conv1.1.weight"] = torch.empty(512, 512, 3, 3)
    with pytest.raises(ReleasedWeightsError, match=r"G: 1 unknown keys.*BottleNeck\.9"):
        build_loaded(factory, state, rules, "G")
    del state["BottleNeck.9.conv1.1.weight"], state["up1.2.running_var"]
    with pytest.raises(ReleasedWeightsError, match=r"missing keys.*up1\.2\.running_var"):
        build_loaded(factory, state, rules, "G")
    state["up1.2.running_var"] = torch.empty(65)
    with pytest.raises(ReleasedWeightsError, match=r"shapes.*up1\.2\.running_var \(65,\)"):
        build_loaded(factory, state, rules, "G")
    del state["up1.2.num_batches_tracked"]  # pre-0.4.1 checkpoints: filled with 0
    state["up1.2.running_var"] = torch.ones(64)
    loaded = build_loaded(factory, state, rules, "G")
    assert loaded.up[2][1][1].num_batches_tracked.item() == 0


def _register_files(tmp_path: Path, states: dict) -> ModelStore:
    """Write ``{registry name: state dict}`` into a models dir under ``tmp_path``."""
    for name, state in states.items():
        target = tmp_path / REGISTRY[name].file
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, target)
    return ModelStore(tmp_path)


# ---- forward passes against the reference computation ----------------------------------


def _bn_f(sd: dict, p: str, x: torch.Tensor) -> torch.Tensor:
    w, b, m, v = (sd[f"{p}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    return F.batch_norm(x, m, v, w, b, False, 0.0, 1e-5)


def _ref_aad(sd: dict, p: str, h, z_attr, z_id):
    """ghost ``AADLayer.forward``."""
    h = F.instance_norm(h, eps=1e-5)
    a = F.conv2d(z_attr, sd[f"{p}.conv1.weight"], sd[f"{p}.conv1.bias"]) * h
    a = a + F.conv2d(z_attr, sd[f"{p}.conv2.weight"], sd[f"{p}.conv2.bias"])
    i = F.linear(z_id, sd[f"{p}.fc1.weight"], sd[f"{p}.fc1.bias"])[:, :, None, None] * h
    i = i + F.linear(z_id, sd[f"{p}.fc2.weight"], sd[f"{p}.fc2.bias"])[:, :, None, None]
    m = torch.sigmoid(F.conv2d(h, sd[f"{p}.conv_h.weight"], sd[f"{p}.conv_h.bias"]))
    return (1 - m) * a + m * i


def _ref_aad_resblk(sd: dict, p: str, h, z_attr, z_id, num_blocks: int):
    """ghost ``AAD_ResBlk.forward`` (``AddBlocksSequential``: AAD → ReLU → conv, repeated)."""
    x = h
    for u in range(num_blocks):
        x = F.relu(_ref_aad(sd, f"{p}.add_blocks.{3 * u}", x, z_attr, z_id))
        x = F.conv2d(x, sd[f"{p}.add_blocks.{3 * u + 2}.weight"], padding=1)
    if f"{p}.last_add_block.2.weight" in sd:
        h = F.relu(_ref_aad(sd, f"{p}.last_add_block.0", h, z_attr, z_id))
        h = F.conv2d(h, sd[f"{p}.last_add_block.2.weight"], padding=1)
    return x + h


def _ref_ghost(sd: dict, xt, z_id, levels: int, num_blocks: int = 2):
    """ghost ``AEI_Net.forward`` (unet) for ``levels`` encoder levels (7 at 256 px)."""
    feats, h = [], xt
    for i in range(1, levels + 1):
        h = F.conv2d(h, sd[f"encoder.conv{i}.0.weight"], stride=2, padding=1)
        h = F.leaky_relu(_bn_f(sd, f"encoder.conv{i}.1", h), 0.1)
        feats.append(h)
    z_attr = [feats[-1]]
    for j in range(1, levels):
        x = F.conv_transpose2d(
            z_attr[-1], sd[f"encoder.deconv{j}.deconv.weight"], stride=2, padding=1
        )
        x = F.leaky_relu(_bn_f(sd, f"encoder.deconv{j}.bn", x), 0.1)
        z_attr.append(torch.cat((x, feats[levels - 1 - j]), dim=1))
    z_attr.append(F.interpolate(z_attr[-1], scale_factor=2, mode="bilinear", align_corners=True))
    m = F.conv_transpose2d(
        z_id.reshape(z_id.shape[0], -1, 1, 1), sd["generator.up1.weight"], sd["generator.up1.bias"]
    )
    for k in range(1, levels + 2):
        m = _ref_aad_resblk(sd, f"generator.AADBlk{k}", m, z_attr[k - 1], z_id, num_blocks)
        if k <= levels:
            m = F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=True)
    return torch.tanh(m)


def _ref_iresnet(sd: dict, x, layers):
    """arcface_torch ``IResNet.forward`` (input (B, 3, 112, 112) in [-1, 1])."""
    x = F.prelu(_bn_f(sd, "bn1", F.conv2d(x, sd["conv1.weight"], padding=1)), sd["prelu.weight"])
    for i, n in enumerate(layers, start=1):
        for b in range(n):
            p = f"layer{i}.{b}"
            out = F.conv2d(_bn_f(sd, f"{p}.bn1", x), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn_f(sd, f"{p}.bn2", out), sd[f"{p}.prelu.weight"])
            stride = 2 if b == 0 else 1
            out = _bn_f(
                sd, f"{p}.bn3", F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)
            )
            if b == 0:
                x = _bn_f(
                    sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2)
                )
            x = out + x
    x = torch.flatten(_bn_f(sd, "bn2", x), 1)
    return _bn_f(sd, "features", F.linear(x, sd["fc.weight"], sd["fc.bias"]))


TINY_GHOST = GHOST_RELEASE.model_copy(
    update={"image_size": 32, "base_channels": 4, "max_channels": 16}
)


def test_ghost_release_matches_the_reference_forward(tmp_path, monkeypatch):
    """A GHOST-format state dict (reference names) loaded into AEINet through the key map
    computes what ``AEI_Net`` computes; the identity is IResNet's raw output on the source
    resized to 112 (bilinear, align_corners=True, as ghost's core.py)."""
    g_ref = _to_reference(_randomise(AEINet(TINY_GHOST, 512)), ghost_key_map(TINY_GHOST))
    layers = (1, 2, 1, 1)
    arc_ref = _randomise(IResNet(layers), seed=1).state_dict()
    store = _register_files(
        tmp_path, {"ghost_unet_2blocks": g_ref, "ghost_arcface_iresnet100": arc_ref}
    )
    row = RELEASED["ghost_unet_2blocks"]
    monkeypatch.setitem(
        RELEASED, row.name, _replace(row, generator=TINY_GHOST, identity_layers=layers)
    )
    model, meta = load_released("ghost_unet_2blocks", store)
    assert isinstance(model, GhostRelease) and model.cfg.image_size == 32
    assert meta["identity_model"] == "ghost_arcface_iresnet100" and meta["run_name"] == row.name
    assert len(meta["generator_sha256"]) == 64 == len(meta["identity_sha256"])
    torch.manual_seed(0)
    target, source = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = model.identity_code(source)
        z_ref = _ref_iresnet(
            arc_ref,
            F.interpolate(source, scale_factor=3.5, mode="bilinear", align_corners=True),
            layers,
        )
        torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.embed_identity(source), F.normalize(z_ref, dim=1))
        swap, _ = model(target, z)
        torch.testing.assert_close(
            swap, _ref_ghost(g_ref, target, z, levels=4), rtol=1e-4, atol=1e-5
        )


def _replace(row, **changes):
    import dataclasses

    return dataclasses.replace(row, **changes)


def _ref_simswap(sd: dict, x01, latent, num_down: int, n_blocks: int):
    """SimSwap ``fs_networks.Generator_Adain_Upsample.forward`` (input RGB [0, 1], output
    ``(tanh + 1) / 2``); its ``InstanceNorm`` has ε 1e-8."""

    def inorm(x):
        x = x - x.mean((2, 3), keepdim=True)
        return x * torch.rsqrt((x * x).mean((2, 3), keepdim=True) + 1e-8)

    def style(y, p):
        s = F.linear(latent, sd[f"{p}.linear.weight"], sd[f"{p}.linear.bias"])
        s = s.view(-1, 2, y.size(1), 1, 1)
        return y * (s[:, 0] + 1) + s[:, 1]

    h = F.conv2d(
        F.pad(x01, (3,) * 4, mode="reflect"), sd["first_layer.1.weight"], sd["first_layer.1.bias"]
    )
    h = F.relu(_bn_f(sd, "first_layer.2", h))
    for i in range(1, num_down + 1):
        h = F.conv2d(h, sd[f"down{i}.0.weight"], sd[f"down{i}.0.bias"], stride=2, padding=1)
        h = F.relu(_bn_f(sd, f"down{i}.1", h))
    for b in range(n_blocks):
        p = f"BottleNeck.{b}"
        y = F.conv2d(
            F.pad(h, (1,) * 4, mode="reflect"), sd[f"{p}.conv1.1.weight"], sd[f"{p}.conv1.1.bias"]
        )
        y = F.relu(style(inorm(y), f"{p}.style1"))
        y = F.conv2d(
            F.pad(y, (1,) * 4, mode="reflect"), sd[f"{p}.conv2.1.weight"], sd[f"{p}.conv2.1.bias"]
        )
        h = h + style(inorm(y), f"{p}.style2")
    for i in range(num_down, 0, -1):
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.relu(
            _bn_f(
                sd, f"up{i}.2", F.conv2d(h, sd[f"up{i}.1.weight"], sd[f"up{i}.1.bias"], padding=1)
            )
        )
    h = F.conv2d(
        F.pad(h, (3,) * 4, mode="reflect"), sd["last_layer.1.weight"], sd["last_layer.1.bias"]
    )
    return (torch.tanh(h) + 1) / 2


def _ref_simswap_arcface(sd: dict, x, layers, use_se: bool):
    """SimSwap ``arcface_models.ResNet.forward`` (ImageNet-normalised (B, 3, 112, 112))."""
    x = F.prelu(_bn_f(sd, "bn1", F.conv2d(x, sd["conv1.weight"])), sd["prelu.weight"])
    x = F.max_pool2d(x, 2, 2)
    for i, n in enumerate(layers, start=1):
        for b in range(n):
            p, stride = f"layer{i}.{b}", 2 if (b == 0 and i > 1) else 1
            out = F.conv2d(_bn_f(sd, f"{p}.bn0", x), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn_f(sd, f"{p}.bn1", out), sd[f"{p}.prelu.weight"])
            out = _bn_f(
                sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)
            )
            if use_se:
                y = F.adaptive_avg_pool2d(out, 1).flatten(1)
                y = F.prelu(
                    F.linear(y, sd[f"{p}.se.fc.0.weight"], sd[f"{p}.se.fc.0.bias"]),
                    sd[f"{p}.se.fc.1.weight"],
                )
                y = torch.sigmoid(F.linear(y, sd[f"{p}.se.fc.2.weight"], sd[f"{p}.se.fc.2.bias"]))
                out = out * y[:, :, None, None]
            if f"{p}.downsample.0.weight" in sd:
                x = _bn_f(
                    sd,
                    f"{p}.downsample.1",
                    F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride),
                )
            x = F.prelu(out + x, sd[f"{p}.prelu.weight"])
    x = _bn_f(sd, "bn2", x).flatten(1)
    return _bn_f(sd, "bn3", F.linear(x, sd["fc.weight"], sd["fc.bias"]))


TINY_SIMSWAP = SimSwapGeneratorConfig(
    image_size=32, base_channels=8, max_channels=16, num_down=2, id_blocks=2, adain_eps=1e-8
)


def test_simswap_release_matches_the_reference_forward(tmp_path, monkeypatch):
    """SimSwap-format weights through the key map compute what ``Generator_Adain_Upsample``
    computes; the wrapper feeds it [0, 1], returns its output in [-1, 1], and takes the
    identity from ImageNet-normalised, nearest-downsampled crops, L2-normalised."""
    g_ref = _to_reference(
        _randomise(SimSwapGenerator(TINY_SIMSWAP, 512)), simswap_key_map(TINY_SIMSWAP)
    )
    layers = (1, 2, 1, 1)
    arc_ref = _randomise(SimSwapArcFace(layers, use_se=True), seed=1).state_dict()
    store = _register_files(tmp_path, {"simswap_224": g_ref, "simswap_arcface": arc_ref})
    row = RELEASED["simswap_224"]
    monkeypatch.setitem(RELEASED, row.name, _replace(row, generator=TINY_SIMSWAP))
    model, _ = load_released("simswap_224", store)
    assert isinstance(model, SimSwapRelease) and len(model.arcface.layer2) == 2
    torch.manual_seed(0)
    target, source = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 224, 224) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    with torch.no_grad():
        z = model.identity_code(source)
        img_id = ((source + 1) / 2 - mean) / std  # transformer_Arcface
        z_ref = _ref_simswap_arcface(arc_ref, F.interpolate(img_id, scale_factor=0.5), layers, True)
        torch.testing.assert_close(z, F.normalize(z_ref, dim=1), rtol=1e-4, atol=1e-5)
        swap, _ = model(target, z)
        ref = _ref_simswap(g_ref, (target + 1) / 2, z, num_down=2, n_blocks=2)
        torch.testing.assert_close((swap + 1) / 2, ref, rtol=1e-4, atol=1e-5)


def test_network_options_keep_the_defaults():
    """The options added for the releases default to the previous behaviour."""
    assert AEINetConfig().align_corners is False
    assert SimSwapGeneratorConfig().adain_eps == 1e-5
    g = SimSwapGenerator(SimSwapGeneratorConfig(image_size=32, num_down=2, id_blocks=1), 8)
    assert g.id_blocks[0].ada1.norm.eps == 1e-5


# ---- the one-time conversion of a pickled module ------------------------------------------


class _Evil:
    """An object whose unpickling would create a folder (os.mkdir)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.path),))


def _fake_reference_module(monkeypatch) -> types.ModuleType:
    """A ``models.arcface_models`` module whose ResNet/IRBlock/SEBlock classes stand in for
    SimSwap's, so ``torch.save`` pickles them under the reference names."""
    from training.released import simswap_arcface as ours

    pkg, mod = types.ModuleType("models"), types.ModuleType("models.arcface_models")
    for name, base in [
        ("ResNet", ours.SimSwapArcFace),
        ("IRBlock", ours.IRBlock),
        ("SEBlock", ours.SEBlock),
    ]:
        cls = type(name, (base,), {"__module__": mod.__name__})
        setattr(mod, name, cls)
    mod.ArcMarginModel = type("ArcMarginModel", (nn.Module,), {"__module__": mod.__name__})
    pkg.arcface_models = mod
    monkeypatch.setitem(sys.modules, "models", pkg)
    monkeypatch.setitem(sys.modules, "models.arcface_models", mod)
    return mod


def _pickled_arcface(tmp_path, monkeypatch, layout: str, zipfile: bool) -> tuple[Path, dict]:
    """Save a SimSwap-like ArcFace as a pickled module, then make its classes unimportable.
    Returns (file, the module's state dict)."""
    mod = _fake_reference_module(monkeypatch)
    net = _randomise(SimSwapArcFace((1, 1, 2, 1), use_se=True))
    for m in net.modules():  # the reference classes, as SimSwap's file holds them
        m.__class__ = getattr(
            mod, {"SimSwapArcFace": "ResNet"}.get(type(m).__name__, type(m).__name__), type(m)
        )
    metric_fc = mod.ArcMarginModel()
    metric_fc.weight = nn.Parameter(torch.randn(10, 512))
    obj = net
    if layout == "dict":  # InsightFace-v2 / early SimSwap: {"model": DataParallel(ResNet), …}
        obj = {
            "epoch": 12,
            "acc": np.float64(0.99),
            "model": nn.DataParallel(net),
            "metric_fc": metric_fc,
            "optimizer": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
            "extra": _Evil(tmp_path / "EXECUTED"),
        }
    path = tmp_path / "arcface_checkpoint.tar"
    torch.save(obj, path, _use_new_zipfile_serialization=zipfile)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    monkeypatch.delitem(sys.modules, "models.arcface_models")
    monkeypatch.delitem(sys.modules, "models")
    return path, state


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")  # legacy torch.save
@pytest.mark.parametrize(("layout", "zipfile"), [("dict", True), ("dict", False), ("module", True)])
def test_pickled_module_converts_without_running_its_code(tmp_path, monkeypatch, layout, zipfile):
    path, expected = _pickled_arcface(tmp_path, monkeypatch, layout, zipfile)
    with pytest.raises(ReleasedWeightsError, match=r"pickles Python objects.*convert-released"):
        load_plain_state_dict(path)  # run time refuses it (weights_only=True)
    done = convert_release("simswap_arcface", ModelStore(tmp_path / "models"), source=path)
    assert "models.arcface_models" not in sys.modules and "models" not in sys.modules
    assert not (tmp_path / "EXECUTED").exists()  # the pickled os.mkdir call never ran
    converted = load_plain_state_dict(done.path)
    assert done.path == tmp_path / "models" / REGISTRY["simswap_arcface"].file
    assert list(converted) == list(expected) and done.tensors == len(expected)
    assert all(torch.equal(converted[k], v) for k, v in expected.items())
    assert arch_from_state_dict(converted) == ((1, 1, 2, 1), True)


def test_conversion_refuses_a_file_without_a_module(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(OrderedDict(a=torch.zeros(2)), path)
    with pytest.raises(ReleasedWeightsError, match="no pickled module"):
        read_pickled_state_dict(path)
    with pytest.raises(ReleasedWeightsError, match="has no conversion"):
        convert_release("ghost_unet_2blocks", ModelStore(tmp_path), source=path)


# ---- what a user sees --------------------------------------------------------------------


def test_missing_files_name_the_file_and_the_url(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(ModelFileMissingError) as err:
        load_released("ghost_unet_2blocks", store)
    spec = REGISTRY["ghost_unet_2blocks"]
    assert str(tmp_path / spec.file) in str(err.value) and spec.url in str(err.value)
    with pytest.raises(ModelFileMissingError) as err:
        released_file(store, "simswap_arcface")
    msg = str(err.value)
    assert str(tmp_path / REGISTRY["simswap_arcface"].file) in msg
    assert REGISTRY["simswap_arcface_release"].url in msg
    assert "fsp convert-released simswap_arcface" in msg
    with pytest.raises(ModelFileMissingError, match=r"arcface_checkpoint\.tar"):
        convert_release("simswap_arcface", store)


def test_convert_command(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"models_dir": str(tmp_path / "models")}}))
    runner = CliRunner()
    result = runner.invoke(app, ["convert-released", "simswap_arcface", "--params", str(params)])
    assert result.exit_code == 2 and "arcface_checkpoint.tar" in result.output
    assert REGISTRY["simswap_arcface_release"].url in result.output
    path, _ = _pickled_arcface(tmp_path, monkeypatch, "dict", True)
    args = ["convert-released", "simswap_arcface", "--source", str(path), "--params", str(params)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "arcface_state_dict.pth" in result.output and "sha256" in result.output


def test_evaluate_generator_setting_lists_the_released_models():
    from evaluation.config import EvaluateConfig
    from infra.config import ConfigError, build

    assert build(EvaluateConfig, {}, "evaluate").generator == "train"
    assert (
        build(EvaluateConfig, {"generator": "simswap_224"}, "evaluate").generator == "simswap_224"
    )
    with pytest.raises(ConfigError, match="ghost_unet_2blocks"):
        build(EvaluateConfig, {"generator": "nope"}, "evaluate")
