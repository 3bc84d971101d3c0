"""Identity encoders built from one registered recognition ONNX (ArcFace family).

Two views of the same weights:

* :class:`IdentityEncoder` — onnxruntime through ``insightface.model_zoo.ArcFaceONNX``;
  used by preprocessing (precomputed embeddings) and evaluation.
* :class:`TorchIdentityEncoder` — the same ONNX converted with ``onnx2torch``, frozen and
  differentiable; used by the identity loss (FaceShifter eq. 4.9, SimSwap eq. 3).

Both take ArcFace-aligned faces and return L2-normalised embeddings whose dimension is
read from the model, never assumed.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from insightface.model_zoo.arcface_onnx import ArcFaceONNX

from infra.dataset_format import DatasetCard
from infra.frozen import FrozenOnnxModule
from infra.geometry import l2_normalize
from infra.models import ModelStore
from infra.onnx_graph import batchable
from infra.ort import make_session


def embedding_dim(model: onnx.ModelProto) -> int:
    """Embedding size from the graph's output shape ``[N, D]``; raises ValueError if unknown."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].dim_value:
        raise ValueError("recognition model output has no static embedding dimension")
    return int(dims[-1].dim_value)


class IdentityEncoder:
    """onnxruntime identity encoder (insightface ``ArcFaceONNX``), batched.

    Parameters
    ----------
    store : model store; ``name`` must be a ``recognition`` entry.
    name : registry name, e.g. ``mobilefacenet_128d`` or ``arcface_w600k_r50``.
    threads, use_gpu : onnxruntime settings.
    """

    def __init__(self, store: ModelStore, name: str, threads: int = 1, use_gpu: bool = False):
        self.name = name
        self.spec = store.spec(name)
        path = store.path(name)
        graph = batchable(onnx.load(str(path)))
        self.dim = embedding_dim(graph)
        session = make_session(graph.SerializeToString(), threads=threads, use_gpu=use_gpu)
        self.model = ArcFaceONNX(model_file=str(path), session=session)
        # The registry, not the graph heuristics, owns the input normalisation.
        self.model.input_mean = self.spec.input.mean
        self.model.input_std = self.spec.input.std
        self.input_size = int(self.spec.input.shape[-1])

    def embed(self, faces_rgb: np.ndarray) -> np.ndarray:
        """Embed aligned faces.

        Parameters
        ----------
        faces_rgb : (N, S, S, 3) uint8 RGB crops on the ArcFace template (any S; resized to
            the model's input side when different).

        Returns
        -------
        (N, D) float32, rows L2-normalised.
        """
        faces_rgb = np.asarray(faces_rgb)
        if faces_rgb.ndim != 4 or faces_rgb.shape[-1] != 3:
            raise ValueError(f"expected (N, S, S, 3) uint8 faces, got {faces_rgb.shape}")
        if len(faces_rgb) == 0:
            return np.zeros((0, self.dim), np.float32)
        # ArcFaceONNX takes BGR images and resizes them itself (cv2.dnn.blobFromImages).
        feats = self.model.get_feat([np.ascontiguousarray(f[..., ::-1]) for f in faces_rgb])
        feats = np.asarray(feats, dtype=np.float32).reshape(len(faces_rgb), -1)
        return l2_normalize(feats, axis=1)


class TorchIdentityEncoder(FrozenOnnxModule):
    """Frozen, differentiable identity encoder converted from the registered ONNX.

    Input: (B, 3, H, W) float RGB in [-1, 1], faces on the ArcFace template at any square
    size (resized to the model side with antialiased bilinear interpolation).
    Output: (B, D) float32 L2-normalised embeddings.
    """

    def __init__(self, store: ModelStore, name: str):
        super().__init__(store, name)
        self.dim = embedding_dim(self.graph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net(self.prepare(x))
        return F.normalize(feats.reshape(x.shape[0], -1).float(), dim=1)


def identity_encoder_for_dataset(card: DatasetCard, store: ModelStore) -> TorchIdentityEncoder:
    """The differentiable twin of the ONNX that computed the dataset's embeddings.

    Raises ValueError when the registry's checksum or the model's dimension disagree with
    the dataset card (the identity loss would compare incompatible embeddings), and
    :class:`infra.models.ModelError` when the file is missing or altered.
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
