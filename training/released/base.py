"""What every released swapper shares: its registry row, the wrapper interface, reading a
plain state dict at run time and renaming it through an explicit key map.

A released checkpoint is read with ``torch.load(weights_only=True)`` only: tensors and plain
containers, never a pickled Python object. A release that publishes a pickled module goes
through the one-time conversion of :mod:`training.released.convert` first.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from infra.config import StrictConfig
from infra.models import ModelError, ModelFileMissingError, ModelStore, file_sha256

log = logging.getLogger(__name__)

#: Buffers a release may lack (checkpoints older than PyTorch 0.4.1 have no batch counter);
#: they are filled with 0, as PyTorch's own BatchNorm does for such files.
OPTIONAL_SUFFIXES = (".num_batches_tracked",)


class ReleasedWeightsError(ModelError):
    """A released checkpoint cannot be used: a pickled module, an unknown release, or keys
    and shapes that do not match the key map."""


@dataclass(frozen=True)
class ReleasedSwapper:
    """One published generator and the identity encoder it was trained with.

    Attributes
    ----------
    name : ``evaluate.generator`` value and MLflow run name.
    family : ``"ghost"`` or ``"simswap"``: which loader and key map apply.
    title : one line for listings.
    generator_model : :data:`infra.models.REGISTRY` name of the generator weights.
    identity_model : registry name of the identity encoder's weights.
    generator : architecture of the project network the weights load into
        (``AEINetConfig`` or ``SimSwapGeneratorConfig``).
    identity_layers : blocks per stage of the identity ResNet; None reads them from the file.
    """

    name: str
    family: str
    title: str
    generator_model: str
    identity_model: str
    generator: StrictConfig
    identity_layers: tuple[int, ...] | None = None


class ReleasedGenerator(nn.Module):
    """A released generator behind the project's generator interface.

    ``forward(target (B, 3, S, S) RGB in [-1, 1], z (B, 512)) -> (swap (B, 3, S, S) in
    [-1, 1], extras)``, S = ``cfg.image_size``; ``identity_code(source)`` gives the ``z`` the
    release feeds its generator; :meth:`embed_identity` the same direction L2-normalised.
    Subclasses convert between the project's ranges and the release's own normalisation.
    """

    cfg: StrictConfig
    id_dim: int = 512

    def __init__(self, generator: nn.Module, arcface: nn.Module):
        super().__init__()
        self.generator, self.arcface = generator, arcface
        self.cfg, self.id_dim = generator.cfg, generator.id_dim

    def identity_code(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [-1, 1] source crops → (B, id_dim) generator input."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_identity(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [-1, 1] source crops (ArcFace template, any S) → (B, id_dim)
        float32 identity embeddings of the release's own encoder, rows L2-normalised."""
        return F.normalize(self.identity_code(images).float(), dim=1)

    def _check(self, target: torch.Tensor, z: torch.Tensor) -> None:
        S, D = self.cfg.image_size, self.id_dim
        if target.shape[1:] != (3, S, S) or z.ndim != 2 or z.shape[1] != D:
            raise ValueError(
                f"expected (B, 3, {S}, {S}) and (B, {D}), got "
                f"{tuple(target.shape)} and {tuple(z.shape)}"
            )


def load_plain_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint that holds only tensors (``torch.load(weights_only=True)``).

    Returns
    -------
    ``{name: tensor}`` on the CPU; a leading ``module.`` (DataParallel) on every key is
    dropped.

    Raises
    ------
    ReleasedWeightsError : the file pickles Python objects (a module, an optimizer) — it is
        refused, never unpickled — or holds no mapping of names to tensors.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReleasedWeightsError(
            f"{path} is not a plain state dict: it pickles Python objects ({first}). It is "
            "not unpickled at run time; convert it once with `fsp convert-released <name>` "
            "(training/released/convert.py)."
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ReleasedWeightsError(f"{path} does not hold a mapping of names to tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


#: A renaming rule: a regex over a whole key and a function of its match → the new key.
Rule = tuple[str, Callable[[re.Match], str]]


def key_map(keys: Iterable[str], rules: list[Rule]) -> dict[str, str]:
    """Apply the first matching rule to each key (``re.fullmatch``).

    Returns
    -------
    ``{rule(key): key}``; with rules that rename the project's keys into a release's, this
    is the release-name → project-name map that :func:`load_mapped` takes.

    Raises
    ------
    ValueError : a key no rule matches, or two keys renamed to one.
    """
    out: dict[str, str] = {}
    for key in keys:
        for pattern, rename in rules:
            m = re.fullmatch(pattern, key)
            if m:
                new = rename(m)
                break
        else:
            raise ValueError(f"no key-map rule for {key!r}")
        if new in out:
            raise ValueError(f"{key!r} and {out[new]!r} both map to {new!r}")
        out[new] = key
    return out


def map_state_dict(
    state: dict[str, torch.Tensor], mapping: dict[str, str], module: nn.Module, what: str
) -> dict[str, torch.Tensor]:
    """Rename a release's state dict into ``module``'s names, checking that every key is
    used and every shape agrees.

    Parameters
    ----------
    state : the release's ``{name: tensor}``.
    mapping : release name → project name, covering every entry of ``module.state_dict()``.
    module : the project module (may live on the meta device: only names and shapes are read).
    what : the file or model named in errors.

    Returns
    -------
    ``{project name: float32 tensor}`` (integer buffers keep their dtype); absent
    :data:`OPTIONAL_SUFFIXES` buffers are filled with 0.

    Raises
    ------
    ReleasedWeightsError : keys of the file the map does not know, keys the map needs that
        the file lacks, or shapes that differ (each listed, first five).
    """
    own = module.state_dict()
    unknown = sorted(set(state) - set(mapping))
    missing = sorted(k for k in set(mapping) - set(state) if not k.endswith(OPTIONAL_SUFFIXES))
    bad = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[mapping[k]].shape)}"
        for k in sorted(set(state) & set(mapping))
        if state[k].shape != own[mapping[k]].shape
    ]
    for label, items in (("unknown keys", unknown), ("missing keys", missing), ("shapes", bad)):
        if items:
            raise ReleasedWeightsError(f"{what}: {len(items)} {label}, e.g. {items[:5]}")
    out = {}
    for ref, ours in mapping.items():
        t = state.get(ref, torch.zeros((), dtype=torch.long))
        out[ours] = (t.float() if t.is_floating_point() else t).contiguous()
    return out


def meta_module(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()`` built on the meta device: names and shapes, no memory or init cost."""
    with torch.device("meta"):
        return factory()


#: The rule of networks whose names are the published ones (the ArcFace backbones).
SAME_NAMES: list[Rule] = [(r"(.+)", lambda m: m[1])]


def build_loaded(
    factory: Callable[[], nn.Module],
    state: dict[str, torch.Tensor],
    rules: list[Rule],
    what: str,
) -> nn.Module:
    """Build ``factory()`` on the meta device, rename ``state`` into its names through the
    key map of ``rules`` (:func:`key_map`, :func:`map_state_dict`) and load it with
    ``strict=True, assign=True``.

    Returns
    -------
    The module on the CPU, float32, in eval mode.

    Raises
    ------
    ReleasedWeightsError : as :func:`map_state_dict`.
    """
    module = meta_module(factory)
    mapping = key_map(module.state_dict().keys(), rules)
    module.load_state_dict(map_state_dict(state, mapping, module, what), strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # pragma: no cover - strict loading assigns every entry
        raise ReleasedWeightsError(f"{what}: not loaded: {left[:5]}")
    return module.eval()


def released_file(store: ModelStore, name: str) -> Path:
    """The verified file of registry model ``name``; for a model that is written by a
    conversion, a missing file's error adds the command that writes it.

    Raises
    ------
    ModelFileMissingError : file absent (message names it and its URL, and for a converted
        model the source file and `fsp convert-released`).
    ModelChecksumError : file present with another SHA-256.
    """
    from training.released.convert import CONVERSIONS

    try:
        return store.path(name)
    except ModelFileMissingError as e:
        if name not in CONVERSIONS:
            raise
        source = store.spec(CONVERSIONS[name])
        raise ModelFileMissingError(
            f"{e} The published file ({source.url}) is a pickled module: place it at "
            f"{store.models_dir / source.file} and run `fsp convert-released {name}` once."
        ) from None


def file_record(store: ModelStore, name: str) -> tuple[Path, str]:
    """(verified path, sha256) of registry model ``name`` (see :func:`released_file`)."""
    path = released_file(store, name)
    return path, file_sha256(path)


def release_files(store: ModelStore, row: ReleasedSwapper) -> tuple[Path, Path, dict]:
    """(generator file, identity file, meta naming both with their SHA-256) of ``row``;
    :func:`released_file`'s errors when one is absent."""
    g_path, g_sha = file_record(store, row.generator_model)
    i_path, i_sha = file_record(store, row.identity_model)
    meta = {"generator_file": str(g_path), "generator_sha256": g_sha}
    return g_path, i_path, meta | {"identity_file": str(i_path), "identity_sha256": i_sha}
