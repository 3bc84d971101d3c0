"""Frozen helper networks, built once per run and passed to the objectives.

* the identity encoder: the differentiable twin of the ONNX that made the dataset's
  embeddings (:class:`infra.identity.TorchIdentityEncoder`);
* the eye-landmark network for GHOST's eye loss: PFLD 68-point landmarks converted from
  its ONNX with onnx2torch.
"""

from __future__ import annotations

import torch

from infra.frozen import FrozenOnnxModule
from infra.identity import TorchIdentityEncoder
from infra.models import ModelStore
from preprocessing.dataset_card import DatasetCard

#: 68-point indices of the two eyes (iBUG 300-W: 36–41 and 42–47).
EYE_POINTS = list(range(36, 48))


def identity_encoder_for(card: DatasetCard, store: ModelStore) -> TorchIdentityEncoder:
    """The differentiable twin of the ONNX that computed the dataset's embeddings.

    Raises ValueError when the registry's checksum or the model's dimension disagree with
    the dataset card (the identity loss would compare incompatible embeddings).
    """
    spec = store.spec(card.embedding.name)
    if spec.sha256 != card.embedding.sha256:
        raise ValueError(
            f"dataset embeddings were made by {card.embedding.name} "
            f"sha256 {card.embedding.sha256}, registry has {spec.sha256}: re-run prepare"
        )
    encoder = TorchIdentityEncoder(store, card.embedding.name)
    if encoder.dim != card.embedding.dim:
        raise ValueError(
            f"identity model gives {encoder.dim}-d, dataset has {card.embedding.dim}-d"
        )
    return encoder


class EyeLandmarks(FrozenOnnxModule):
    """Frozen, differentiable eye landmarks (PFLD 68, converted from ONNX).

    Input: (B, 3, S, S) RGB in [-1, 1], ArcFace-aligned face crops (any S; resized to the
    model's 112; on such crops PFLD's eye centres fall within 6 % of the inter-ocular
    distance of the detector's). Output: (B, 12, 2) eye landmarks (points 36–47) in [0, 1]
    crop coordinates.
    """

    def __init__(self, store: ModelStore, name: str = "pfld_68"):
        super().__init__(store, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x)).reshape(x.shape[0], -1, 2)[:, EYE_POINTS]
