"""Face parsing into 19-class CelebAMask-HQ label maps, with interchangeable backends.

Backends (see :class:`~preprocessing.parsing.base.MaskBackend`):

* ``unet`` — small U-Net, weights ``unet_faceparsing_19cls`` (:mod:`.unet`).
* ``bisenet`` / ``parsenet`` — facexlib networks, weights ``facexlib_bisenet`` /
  ``facexlib_parsenet`` (:mod:`.facexlib_backends`; not available offline).
* ``facemesh`` — polygons from MediaPipe FaceMesh landmarks (:mod:`.facemesh_regions`); no
  weights of its own, but its landmarks come from ``facemesh_468``.

Build one with :func:`build_mask_backend`; :func:`available_backends` lists those whose
model files are present. :func:`~preprocessing.parsing.regions.raf_regions` turns label maps
into RAFSwap's four region masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infra.models import ModelError, ModelStore
from preprocessing.parsing.base import (
    ALL_CLASSES,
    CLASS_NAMES,
    FACE_INTERIOR,
    NUM_CLASSES,
    BackendUnavailableError,
    MaskBackend,
)
from preprocessing.parsing.regions import REGION_CLASSES, REGION_NAMES, raf_regions


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend.

    Attributes
    ----------
    name : backend name.
    requires : registry names of the models the backend needs end to end (its weights, or
        for ``facemesh`` the landmark model that feeds it).
    build : ``build(store, threads, device) -> MaskBackend``, called once the models are
        verified.
    """

    name: str
    requires: tuple[str, ...]
    build: Callable[[ModelStore, int, str], MaskBackend]


def _build_unet(store: ModelStore, threads: int, device: str) -> MaskBackend:
    from preprocessing.parsing.unet import UNetBackend

    return UNetBackend(store.path("unet_faceparsing_19cls"), device=device, threads=threads)


def _facexlib_builder(kind: str) -> Callable[[ModelStore, int, str], MaskBackend]:
    def build(store: ModelStore, threads: int, device: str) -> MaskBackend:
        import torch

        from preprocessing.parsing.facexlib_backends import FacexlibBackend, load_facexlib_model

        if torch.device(device).type == "cpu":
            torch.set_num_threads(threads)
        return FacexlibBackend(kind, load_facexlib_model(kind, store.models_dir, device), device)

    return build


def _build_facemesh(store: ModelStore, threads: int, device: str) -> MaskBackend:
    from preprocessing.parsing.facemesh_regions import FaceMeshRegionsBackend

    return FaceMeshRegionsBackend()


#: Registered backends by name.
BACKENDS: dict[str, BackendEntry] = {
    e.name: e
    for e in [
        BackendEntry("unet", ("unet_faceparsing_19cls",), _build_unet),
        BackendEntry("bisenet", ("facexlib_bisenet",), _facexlib_builder("bisenet")),
        BackendEntry("parsenet", ("facexlib_parsenet",), _facexlib_builder("parsenet")),
        BackendEntry("facemesh", ("facemesh_468",), _build_facemesh),
    ]
}


def check_backend(name: str, store: ModelStore) -> None:
    """Verify that a backend's model files are present and intact.

    Raises
    ------
    KeyError : unknown backend name.
    BackendUnavailableError : a required file is missing or fails its checksum; the message
        names the file (relative to the models directory) and its download URL.
    """
    if name not in BACKENDS:
        raise KeyError(f"unknown mask backend {name!r}; known: {', '.join(BACKENDS)}")
    for model in BACKENDS[name].requires:
        try:
            store.path(model)
        except ModelError as e:
            spec = store.spec(model)
            raise BackendUnavailableError(
                f"mask backend {name!r} is unavailable: missing or invalid weight file "
                f"{spec.file} (model {model!r}) in {store.models_dir}; download it from "
                f"{spec.url}. Details: {e}"
            ) from e


def build_mask_backend(
    name: str, store: ModelStore, threads: int = 1, device: str = "cpu"
) -> MaskBackend:
    """Build a parsing backend by name.

    Parameters
    ----------
    name : ``unet``, ``bisenet``, ``parsenet`` or ``facemesh``.
    store : model store holding the backend's weights.
    threads : CPU threads; for the torch backends this sets ``torch.set_num_threads``
        (process-wide) when ``device`` is the CPU.
    device : torch device string (``"cpu"``, ``"cuda"``); ignored by ``facemesh``.

    Returns
    -------
    A :class:`~preprocessing.parsing.base.MaskBackend`.

    Raises
    ------
    KeyError : unknown name.
    BackendUnavailableError : weights absent or corrupt (message names file and URL).
    """
    check_backend(name, store)
    return BACKENDS[name].build(store, threads, device)


def available_backends(store: ModelStore) -> list[str]:
    """Names of the backends whose model files are present and verified, registry order."""
    return [
        name
        for name, entry in BACKENDS.items()
        if all(store.available(model) for model in entry.requires)
    ]


__all__ = [
    "ALL_CLASSES",
    "BACKENDS",
    "CLASS_NAMES",
    "FACE_INTERIOR",
    "NUM_CLASSES",
    "REGION_CLASSES",
    "REGION_NAMES",
    "BackendEntry",
    "BackendUnavailableError",
    "MaskBackend",
    "available_backends",
    "build_mask_backend",
    "check_backend",
    "raf_regions",
]
