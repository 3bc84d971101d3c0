"""The released GHOST generator (ai-forever/ghost ``weights/G_unet_2blocks.pth``) in the
project's :class:`~training.networks.aei_net.AEINet`, with its ArcFace IResNet-100
(``arcface_model/backbone.pth``).

The release builds ``AEI_Net(backbone='unet', num_blocks=2, c_id=512)`` (``network/AEI_Net.py``,
``network/AADLayer.py``). Our AEINet at :data:`GHOST_RELEASE` has the same layers in the same
order; the key map only renames:

* ``encoder.conv{i}.{0,1}`` → ``encoder.down.{i-1}.{0,1}``;
* ``encoder.deconv{j}.deconv`` / ``.bn`` → ``encoder.up.{j-1}.0`` / ``.1``;
* ``generator.up1`` → ``generator.stem``;
* ``generator.AADBlk{k}.add_blocks.{3u}.conv1 / conv2 / fc1 / fc2 / conv_h`` (AAD layer)
  → ``generator.blocks.{k-1}.aad.{u}.gamma_att / beta_att / gamma_id / beta_id / mask``;
* ``generator.AADBlk{k}.add_blocks.{3u+2}`` (3×3 conv) → ``generator.blocks.{k-1}.conv.{u}``;
* ``generator.AADBlk{k}.last_add_block.0`` / ``.2`` → ``generator.blocks.{k-1}.aad_s`` /
  ``.shortcut``.

The one structural difference, bilinear resampling with ``align_corners=True``, is the
``align_corners`` setting of :class:`~training.networks.aei_net.AEINetConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infra.models import ModelStore
from training.networks.aei_net import AEINet, AEINetConfig
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
from training.released.iresnet import IRESNET100_LAYERS, IResNet

#: The release's generator: 256 px, encoder 32 → 1024 channels, 2 AAD units per ResBlk
#: (``--num_blocks 2``), instance-norm AAD, bias-free ResBlk convs, align_corners=True.
GHOST_RELEASE = AEINetConfig(
    image_size=256,
    base_channels=32,
    max_channels=1024,
    aad_units=2,
    aad_norm="instance",
    conv_bias=False,
    align_corners=True,
)

#: Project AAD layer names → release ``AADLayer`` names.
_AAD = {"gamma_att": "conv1", "beta_att": "conv2", "gamma_id": "fc1", "beta_id": "fc2"}
_AAD["mask"] = "conv_h"

#: Project key → release key (first match wins; see the module's table).
GHOST_RULES: list[Rule] = [
    (r"encoder\.down\.(\d+)\.(.+)", lambda m: f"encoder.conv{int(m[1]) + 1}.{m[2]}"),
    (r"encoder\.up\.(\d+)\.0\.(.+)", lambda m: f"encoder.deconv{int(m[1]) + 1}.deconv.{m[2]}"),
    (r"encoder\.up\.(\d+)\.1\.(.+)", lambda m: f"encoder.deconv{int(m[1]) + 1}.bn.{m[2]}"),
    (r"generator\.stem\.(.+)", lambda m: f"generator.up1.{m[1]}"),
    (
        r"generator\.blocks\.(\d+)\.aad\.(\d+)\.(\w+)\.(.+)",
        lambda m: f"generator.AADBlk{int(m[1]) + 1}.add_blocks.{3 * int(m[2])}.{_AAD[m[3]]}.{m[4]}",
    ),
    (
        r"generator\.blocks\.(\d+)\.conv\.(\d+)\.(.+)",
        lambda m: f"generator.AADBlk{int(m[1]) + 1}.add_blocks.{3 * int(m[2]) + 2}.{m[3]}",
    ),
    (
        r"generator\.blocks\.(\d+)\.aad_s\.(\w+)\.(.+)",
        lambda m: f"generator.AADBlk{int(m[1]) + 1}.last_add_block.0.{_AAD[m[2]]}.{m[3]}",
    ),
    (
        r"generator\.blocks\.(\d+)\.shortcut\.(.+)",
        lambda m: f"generator.AADBlk{int(m[1]) + 1}.last_add_block.2.{m[2]}",
    ),
]


def ghost_key_map(cfg: AEINetConfig = GHOST_RELEASE, id_dim: int = 512) -> dict[str, str]:
    """Release key → project key for every entry of ``AEINet(cfg, id_dim).state_dict()``
    (built on the meta device). ValueError if a project key has no rule."""
    return key_map(meta_module(lambda: AEINet(cfg, id_dim)).state_dict().keys(), GHOST_RULES)


class GhostRelease(ReleasedGenerator):
    """GHOST as released, behind the project's generator interface.

    Normalisation contract (ai-forever/ghost):

    * target: (B, 3, 256, 256) RGB in [-1, 1] — the release's ``(x/255 - 0.5)/0.5`` of the
      RGB crop (``utils/inference/core.py: transform_target_to_torch``; training
      ``utils/training/Dataset.py``: ``Normalize(0.5, 0.5)``), passed through unchanged;
    * identity: the source crop resized to 112 × 112 (bilinear, ``align_corners=True``, as
      ``core.py: model_inference`` halves its 224-px crop; training resizes with
      ``align_corners=False``) → IResNet-100 → the raw 512-d output, **not** L2-normalised:
      the release feeds the generator that vector (``train.py``, ``core.py``);
    * output: ``tanh`` in [-1, 1] (``AEI_Net.py: AADGenerator``), returned unchanged.

    We run in float32 (the release's inference casts to half precision). The release crops
    faces with insightface's five pose templates at 224 px (``face_align.estimate_norm``,
    mode ``'None'``) and resizes to 256; evaluation feeds every model the project's own
    ArcFace-template crops instead (one protocol for all models).
    """

    def forward(self, target: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(B, 3, S, S) RGB in [-1, 1], (B, 512) :meth:`identity_code` → ((B, 3, S, S) in
        [-1, 1], None). ValueError on other shapes."""
        self._check(target, z)
        return self.generator(target, z)[0], None

    def identity_code(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [-1, 1] ArcFace-template crops → (B, 512) raw IResNet-100
        output, the vector the release's generator takes."""
        x = F.interpolate(images, size=(112, 112), mode="bilinear", align_corners=True)
        return self.arcface(x)


def load_ghost(row: ReleasedSwapper, store: ModelStore) -> tuple[GhostRelease, dict]:
    """Load a GHOST-family release: generator ``row.generator_model`` into ``AEINet(
    row.generator, 512)`` through :data:`GHOST_RULES`, identity ``row.identity_model`` into
    :class:`IResNet` (``row.identity_layers``, default IResNet-100) by its own names.

    Returns
    -------
    (module in eval mode on the CPU, meta with the files and their SHA-256).

    Raises
    ------
    infra.models.ModelFileMissingError : a file is absent (named, with its URL).
    ReleasedWeightsError : a file is a pickled module or does not match the key map.
    """
    g_path, i_path, meta = release_files(store, row)
    generator = build_loaded(
        lambda: AEINet(row.generator, 512), load_plain_state_dict(g_path), GHOST_RULES, str(g_path)
    )
    layers = row.identity_layers or IRESNET100_LAYERS
    arcface = build_loaded(
        lambda: IResNet(layers), load_plain_state_dict(i_path), SAME_NAMES, str(i_path)
    )
    return GhostRelease(generator, arcface).eval(), meta
