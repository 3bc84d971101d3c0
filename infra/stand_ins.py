"""Randomly initialised stand-ins for registered weights that are not on this machine.

Large pretrained priors (VGG-19, and later StyleGAN2, pSp, DDPM…) cannot be downloaded where
the project is built and tested. Their code paths are still run for real: a stand-in is a
state dict with the published checkpoint's key names and shapes (or a prefix of them) and
random values, written to the registry's file location in a models directory and listed in
that directory's :data:`infra.models.STAND_INS_FILE`, so every process that opens a
:class:`~infra.models.ModelStore` there (torchrun ranks, DeepSpeed workers, benchmark
subprocesses) accepts it, with a warning. A stand-in trains and runs everything; its numbers
mean nothing about the published model's.

:func:`overlay_models_dir` makes a models directory that holds another one's files (linked,
not copied) plus the stand-ins, so the real models of ``../shared/models`` stay untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from infra.models import REGISTRY, STAND_INS_FILE, file_sha256


def random_vgg19_features(seed: int = 0, last_index: int = 21) -> dict[str, torch.Tensor]:
    """torchvision ``vgg19`` ``features.<i>.weight|bias`` for every conv up to ``features``
    index ``last_index`` (21 = conv4_2, ~24 MB), Kaiming-normal weights (torchvision's VGG
    init, keeps activations at scale) and N(0, 0.01²) biases. Key names and shapes are the
    published ``vgg19-dcbb9e9d.pth``'s; the global RNG is left as it was."""
    return _random_vgg_features("E", seed, last_index)


def random_vgg16_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision ``vgg16`` ``features.<i>.weight|bias`` of all 13 convs (~59 MB), as
    :func:`random_vgg19_features` (the published ``vgg16-397923af.pth``'s ``features`` keys;
    LPIPS uses no more of it)."""
    return _random_vgg_features("D", seed, 29)


def _random_vgg_features(arch: str, seed: int, last_index: int) -> dict[str, torch.Tensor]:
    """torchvision ``cfgs[arch]`` features up to module ``last_index``, randomly initialised."""
    from torchvision.models.vgg import cfgs, make_layers

    layers, n = [], 0
    for v in cfgs[arch]:  # conv = 2 modules (conv, ReLU), pool = 1
        if n > last_index:
            break
        layers.append(v)
        n += 1 if v == "M" else 2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        features = make_layers(layers)
        for m in features:
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.normal_(m.bias, std=0.01)
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def random_stylegan2_ffhq(seed: int = 0) -> dict:
    """``stylegan2_ffhq_1024``'s file layout (``{"g_ema": state, "latent_avg": (style_dim,)}``)
    at the test size of the ``debug`` widths
    (:data:`training.networks.style_prior.DEBUG_STYLEGAN2`; the published 1024-px generator is
    ~30 M parameters), ``latent_avg`` the mapping network's mean over 4,096 draws."""
    from training.networks.style_prior import DEBUG_STYLEGAN2
    from training.priors.stylegan2 import load_stylegan2, random_stylegan2

    state = random_stylegan2(DEBUG_STYLEGAN2, seed)
    g = load_stylegan2(state, DEBUG_STYLEGAN2)
    w_avg = g.mean_latent(4096, torch.Generator().manual_seed(seed))[0]
    return {"g_ema": state, "latent_avg": w_avg}


def random_psp_ffhq(seed: int = 0) -> dict:
    """``psp_ffhq_encode``'s file layout (``{"state_dict": {"encoder.*", "decoder.*"},
    "latent_avg": (n_styles, style_dim)}``) at the test size of the ``debug`` widths
    (:data:`training.networks.style_prior.DEBUG_PSP` over the StyleGAN2 stand-in, whose mean
    w is the ``latent_avg``)."""
    from training.networks.style_prior import DEBUG_PSP
    from training.priors.psp import random_psp_encoder

    decoder = random_stylegan2_ffhq(seed)
    enc = random_psp_encoder(DEBUG_PSP, seed)
    state = {f"encoder.{k}": v for k, v in enc.items()}
    state |= {f"decoder.{k}": v for k, v in decoder["g_ema"].items()}
    return {
        "state_dict": state,
        "latent_avg": decoder["latent_avg"].expand(DEBUG_PSP.n_styles, -1).clone(),
    }


def random_ddpm_unet(seed: int = 0) -> dict[str, torch.Tensor]:
    """The U-Net weights of ``ddpm_ema_celebahq_256``'s folder at the test size of the
    ``debug`` width (:class:`training.priors.ddpm.DDPMConfig` defaults; diffusers' own
    initialisation); :func:`write_ddpm_configs` writes the folder's two config files."""
    from training.priors.ddpm import build_unet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_unet().state_dict()


def write_ddpm_configs(folder: Path) -> None:
    """``config.json`` and ``scheduler_config.json`` of the test-size DDPM in ``folder``."""
    from training.priors.ddpm import build_scheduler, build_unet

    build_unet().save_config(folder)
    build_scheduler().save_config(folder)


def random_gfpgan_onnx(seed: int = 0, side: int = 512) -> bytes:
    """``gfpgan_1.4``'s interface as a tiny ONNX graph (serialised): input ``input`` and output
    ``output``, both (1, 3, ``side``, ``side``) float32 in [-1, 1]; ``output = clip(x + 0.1 ·
    conv3x3(x), −1, 1)`` with random weights (GFPGAN's StyleGAN2 decoder is not rebuilt; the
    swap path only needs the published input/output contract)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(0, 0.1, (3, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "k"], ["ck"]),
        helper.make_node("Add", ["input", "ck"], ["s"]),
        helper.make_node("Clip", ["s", "lo", "hi"], ["output"]),
    ]
    shape = [1, 3, side, side]
    graph = helper.make_graph(
        nodes,
        "gfpgan_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(0.1, np.float32), "k"),
            numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


#: Registry name → builder of a random state dict (or checkpoint object) in the published
#: layout (an ONNX model: its serialised bytes); large priors are built at the test size of
#: the ``debug`` widths.
BUILDERS: dict[str, Callable[[], dict | bytes]] = {
    "vgg19_imagenet": random_vgg19_features,
    "vgg16_imagenet": random_vgg16_features,
    "stylegan2_ffhq_1024": random_stylegan2_ffhq,
    "psp_ffhq_encode": random_psp_ffhq,
    "ddpm_ema_celebahq_256": random_ddpm_unet,
    "gfpgan_1.4": random_gfpgan_onnx,
}
#: Registry name → writer of the files a stand-in needs beside its weights (in their folder).
COMPANIONS: dict[str, Callable[[Path], None]] = {"ddpm_ema_celebahq_256": write_ddpm_configs}


def _listing(models_dir: Path) -> dict[str, str]:
    f = models_dir / STAND_INS_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def write_stand_in(
    models_dir: Path | str, name: str, state: dict[str, torch.Tensor] | None = None
) -> Path:
    """Save ``state`` (default: ``BUILDERS[name]()``) at the registry's file of ``name`` under
    ``models_dir`` and list its SHA-256 in :data:`~infra.models.STAND_INS_FILE`. Returns the
    file. KeyError for a name that is not registered or has no builder (without ``state``)."""
    models_dir = Path(models_dir)
    spec = REGISTRY[name]
    path = models_dir / spec.file
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = BUILDERS[name]() if state is None else state
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    else:
        torch.save(obj, path)
    if name in COMPANIONS:
        COMPANIONS[name](path.parent)
    listing = _listing(models_dir) | {name: file_sha256(path)}
    (models_dir / STAND_INS_FILE).write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n")
    return path


def overlay_models_dir(base: Path | str, dest: Path | str, stand_ins: list[str]) -> Path:
    """``dest`` holding a symlink to every file of ``base`` plus a stand-in for each name of
    ``stand_ins`` (existing stand-ins are kept, so repeated calls are cheap). Returns
    ``dest``. ValueError when ``base`` already holds a real file for one of ``stand_ins``."""
    base, dest = Path(base).resolve(), Path(dest)
    for f in base.rglob("*"):
        link = dest / f.relative_to(base)
        if f.is_file() and f.name != STAND_INS_FILE and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
    have = _listing(dest)
    if inherited := {k: v for k, v in _listing(base).items() if k not in have}:
        (dest / STAND_INS_FILE).write_text(json.dumps(have | inherited, indent=1) + "\n")
        have |= inherited
    for name in stand_ins:
        if (base / REGISTRY[name].file).is_file() and name not in have:
            raise ValueError(f"{base} holds the real {name}; use it instead of a stand-in")
        if name not in have or not (dest / REGISTRY[name].file).is_file():
            write_stand_in(dest, name)
    return dest
