"""Released (published) face swappers, loaded into this project's networks through explicit
key maps so evaluation scores them under the same protocol as our own runs.

One row of :data:`RELEASED` per published generator; its weights and those of the identity
encoder it was trained with are :data:`infra.models.REGISTRY` entries (file, URL, licence).
``evaluate.generator: <name>`` evaluates a row (:func:`load_released`).

* ``ghost_unet_2blocks``: ai-forever/ghost ``G_unet_2blocks.pth`` in ``AEINet``
  (:mod:`training.released.ghost`), identity ArcFace IResNet-100 ``backbone.pth``;
* ``simswap_224``: neuralchen/SimSwap ``checkpoints/people/latest_net_G.pth`` in
  ``SimSwapGenerator`` (:mod:`training.released.simswap`), identity SimSwap's ArcFace.

Run time reads plain state dicts only (``weights_only=True``); SimSwap's ArcFace, published
as a pickled module, is converted once by ``fsp convert-released simswap_arcface``
(:mod:`training.released.convert`).
"""

from __future__ import annotations

from infra.models import ModelStore
from training.released.base import ReleasedGenerator, ReleasedSwapper, ReleasedWeightsError
from training.released.ghost import GHOST_RELEASE, load_ghost
from training.released.iresnet import IRESNET100_LAYERS
from training.released.simswap import SIMSWAP_224, load_simswap

#: ``evaluate.generator`` value of the train stage's own generator.
TRAINED = "train"

RELEASED: dict[str, ReleasedSwapper] = {
    row.name: row
    for row in (
        ReleasedSwapper(
            name="ghost_unet_2blocks",
            family="ghost",
            title="GHOST (ai-forever/ghost v2.0): AEI-Net, U-Net encoder, 2 AAD units per "
            "ResBlk, 256 px; ArcFace IResNet-100 identity",
            generator_model="ghost_unet_2blocks",
            identity_model="ghost_arcface_iresnet100",
            generator=GHOST_RELEASE,
            identity_layers=IRESNET100_LAYERS,
        ),
        ReleasedSwapper(
            name="simswap_224",
            family="simswap",
            title="SimSwap (neuralchen/SimSwap 1.0) 224 px `people` generator, 9 ID blocks; "
            "SimSwap's ArcFace identity",
            generator_model="simswap_224",
            identity_model="simswap_arcface",
            generator=SIMSWAP_224,
        ),
    )
}

#: Loader of each family: (row, store) → (wrapper, meta).
LOADERS = {"ghost": load_ghost, "simswap": load_simswap}


class UnknownReleasedError(ReleasedWeightsError, ValueError):
    """``evaluate.generator`` names no released swapper."""


def check_generator_name(name: str) -> str:
    """``name`` if it is ``"train"`` or a key of :data:`RELEASED`; else
    :class:`UnknownReleasedError` listing the choices (for the config validator)."""
    if name != TRAINED and name not in RELEASED:
        choices = [TRAINED, *RELEASED]
        raise UnknownReleasedError(f"unknown generator {name!r}; choose one of {choices}")
    return name


def load_released(name: str, store: ModelStore) -> tuple[ReleasedGenerator, dict]:
    """Load released swapper ``name`` (a key of :data:`RELEASED`) on the CPU in eval mode.

    Returns
    -------
    (wrapper, meta): ``wrapper(target (B, 3, S, S) in [-1, 1], z (B, 512)) -> (swap in
    [-1, 1], None)`` with ``z = wrapper.identity_code(source crops in [-1, 1])``; meta has
    ``identity_model``, ``released``, ``run_name``, ``step`` (0) and each file with its
    SHA-256.

    Raises
    ------
    UnknownReleasedError : ``name`` is not registered.
    infra.models.ModelFileMissingError : a weights file is absent (named, with its URL).
    ReleasedWeightsError : a file is a pickled module or does not fit the key map.
    """
    check_generator_name(name)
    if name == TRAINED:
        raise UnknownReleasedError("'train' is the trained generator, not a released one")
    row = RELEASED[name]
    module, files = LOADERS[row.family](row, store)
    meta = {"identity_model": row.identity_model, "released": name, "run_name": name, "step": 0}
    return module, meta | files


__all__ = [
    "RELEASED",
    "TRAINED",
    "ReleasedGenerator",
    "ReleasedSwapper",
    "ReleasedWeightsError",
    "UnknownReleasedError",
    "check_generator_name",
    "load_released",
]
