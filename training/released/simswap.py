"""The released SimSwap 224-px generator (neuralchen/SimSwap ``checkpoints/people/
latest_net_G.pth``) in the project's :class:`~training.networks.simswap.SimSwapGenerator`,
with SimSwap's ArcFace (``arcface_model/arcface_checkpoint.tar``, converted once into a
plain state dict by :mod:`training.released.convert`).

The release builds ``Generator_Adain_Upsample(input_nc=3, output_nc=3, latent_size=512,
n_blocks=9, deep=False)`` of ``models/fs_networks.py`` for ``crop_size 224``
(``models/fs_model.py``). Our SimSwapGenerator at :data:`SIMSWAP_224` has the same layers in
the same order (reflection padding as ``padding_mode="reflect"``); the key map only renames:

* ``first_layer.1`` / ``.2`` → ``stem.0`` / ``stem.1``;
* ``down{i}.{0,1}`` → ``down.{i-1}.{0,1}``;
* ``BottleNeck.{b}.conv{n}.1`` → ``id_blocks.{b}.conv{n}``;
* ``BottleNeck.{b}.style{n}.linear`` → ``id_blocks.{b}.ada{n}.style``;
* ``up{i}.1`` / ``.2`` → ``up.{num_down-i}.1.0`` / ``.1.1``;
* ``last_layer.1`` → ``head``.

The release's instance norm uses ε = 1e-8: the ``adain_eps`` setting of
:class:`~training.networks.simswap.SimSwapGeneratorConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infra.models import ModelStore
from training.networks.simswap import SimSwapGenerator, SimSwapGeneratorConfig
from training.released.base import (
    SAME_NAMES,
    ReleasedGenerator,
    ReleasedSwapper,
    Rule,
    build_loaded,
    key_map,
    load_plain_state_dict,
    meta_module,
    release_files,
)
from training.released.simswap_arcface import SimSwapArcFace, arch_from_state_dict

#: The release's 224-px generator: 64 → 512 channels, 3 downsamplings, 9 ID blocks, ε 1e-8.
SIMSWAP_224 = SimSwapGeneratorConfig(
    image_size=224, base_channels=64, max_channels=512, num_down=3, id_blocks=9, adain_eps=1e-8
)
#: ImageNet mean and std the release normalises the identity input with (RGB, [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def simswap_rules(num_down: int) -> list[Rule]:
    """Project key → release key for a generator with ``num_down`` downsamplings (the
    module's table; ``num_down`` 4 gives the release's ``deep`` ``down4``/``up4``)."""
    return [
        (r"stem\.0\.(.+)", lambda m: f"first_layer.1.{m[1]}"),
        (r"stem\.1\.(.+)", lambda m: f"first_layer.2.{m[1]}"),
        (r"down\.(\d+)\.(.+)", lambda m: f"down{int(m[1]) + 1}.{m[2]}"),
        (r"id_blocks\.(\d+)\.conv([12])\.(.+)", lambda m: f"BottleNeck.{m[1]}.conv{m[2]}.1.{m[3]}"),
        (
            r"id_blocks\.(\d+)\.ada([12])\.style\.(.+)",
            lambda m: f"BottleNeck.{m[1]}.style{m[2]}.linear.{m[3]}",
        ),
        (
            r"up\.(\d+)\.1\.(\d+)\.(.+)",
            lambda m: f"up{num_down - int(m[1])}.{int(m[2]) + 1}.{m[3]}",
        ),
        (r"head\.(.+)", lambda m: f"last_layer.1.{m[1]}"),
    ]


def simswap_key_map(cfg: SimSwapGeneratorConfig = SIMSWAP_224, id_dim: int = 512) -> dict:
    """Release key → project key for every entry of ``SimSwapGenerator(cfg, id_dim)
    .state_dict()`` (built on the meta device). ValueError if a key has no rule."""
    module = meta_module(lambda: SimSwapGenerator(cfg, id_dim))
    return key_map(module.state_dict().keys(), simswap_rules(cfg.num_down))


class SimSwapRelease(ReleasedGenerator):
    """SimSwap 224 as released, behind the project's generator interface.

    Normalisation contract (neuralchen/SimSwap ``test_one_image.py``,
    ``test_wholeimage_swapsingle.py``, ``models/fs_networks.py``):

    * target: the release feeds RGB in [0, 1] (``transforms.ToTensor()``, its ImageNet
      ``Normalize`` commented out); the wrapper maps [-1, 1] → ``(x + 1) / 2``;
    * identity: RGB [0, 1] ImageNet-normalised (``transformer_Arcface``), downsampled to
      112 × 112 with ``F.interpolate``'s default nearest mode (224 → 112), ArcFace, then
      L2-normalised (``latend_id / np.linalg.norm(latend_id)``);
    * output: ``(tanh + 1) / 2`` in [0, 1] in the release; our generator stops at ``tanh``,
      which is the project's [-1, 1] of the same image (returned unchanged).

    The release crops faces with insightface's five pose templates scaled to 224 px
    (``insightface_func/utils/face_align_ffhqandnewarc.py``, mode ``'None'``); evaluation
    feeds every model the project's own ArcFace-template crops instead.
    """

    def __init__(self, generator: SimSwapGenerator, arcface: SimSwapArcFace):
        super().__init__(generator, arcface)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None], False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None], False)

    def forward(self, target: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(B, 3, 224, 224) RGB in [-1, 1], (B, 512) :meth:`identity_code` → ((B, 3, 224,
        224) in [-1, 1], None). ValueError on other shapes."""
        self._check(target, z)
        return self.generator((target + 1) / 2, z)[0], None

    def identity_code(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [-1, 1] ArcFace-template crops → (B, 512) L2-normalised
        ArcFace embedding, the vector the release's generator takes."""
        x = ((images + 1) / 2 - self.mean) / self.std
        x = F.interpolate(x, size=(112, 112), mode="nearest")
        return F.normalize(self.arcface(x), dim=1)


def load_simswap(row: ReleasedSwapper, store: ModelStore) -> tuple[SimSwapRelease, dict]:
    """Load a SimSwap-family release: generator ``row.generator_model`` into
    ``SimSwapGenerator(row.generator, 512)`` through :func:`simswap_rules`, identity
    ``row.identity_model`` (the converted state dict) into :class:`SimSwapArcFace` of the
    depth and SE setting its keys show.

    Returns
    -------
    (module in eval mode on the CPU, meta with the files and their SHA-256).

    Raises
    ------
    infra.models.ModelFileMissingError : a file is absent (named, with its URL; for the
        ArcFace also the conversion command).
    ReleasedWeightsError : a file is a pickled module or does not match the key map.
    """
    g_path, i_path, meta = release_files(store, row)
    generator = build_loaded(
        lambda: SimSwapGenerator(row.generator, 512),
        load_plain_state_dict(g_path),
        simswap_rules(row.generator.num_down),
        str(g_path),
    )
    state = load_plain_state_dict(i_path)
    layers, use_se = arch_from_state_dict(state)
    arcface = build_loaded(lambda: SimSwapArcFace(layers, use_se), state, SAME_NAMES, str(i_path))
    return SimSwapRelease(generator, arcface).eval(), meta
