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


#: Registry name → builder of a random state dict in the published layout.
#: StyleGAN2 (``stylegan2_ffhq_1024``) has no builder here: its 1024-px layout is ~30 M
#: parameters (~120 MB), so its stand-ins are built at test size by
#: :func:`training.priors.stylegan2.random_stylegan2` and written with
#: ``write_stand_in(models_dir, name, state)``.
BUILDERS: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    "vgg19_imagenet": random_vgg19_features,
    "vgg16_imagenet": random_vgg16_features,
}


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
    torch.save(BUILDERS[name]() if state is None else state, path)
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
