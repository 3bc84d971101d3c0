"""Identity embedders built from one registered recognition ONNX (ArcFace family).

Two views of the same weights:

* :class:`IdentityEmbedder` — onnxruntime through ``insightface.model_zoo.ArcFaceONNX``;
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
from onnx import numpy_helper
from torch import nn

from infra.models import ModelStore
from infra.ort import make_session


def embedding_dim(model: onnx.ModelProto) -> int:
    """Embedding size from the graph's output shape ``[N, D]``; raises ValueError if unknown."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].dim_value:
        raise ValueError("recognition model output has no static embedding dimension")
    return int(dims[-1].dim_value)


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make a recognition graph accept any batch size.

    Some exports (``mobilefacenet_128d.onnx``) fix the input batch to 1 and end in a Reshape
    whose constant target is ``[1, -1]``: onnxruntime then rejects N > 1 and onnx2torch
    returns a wrong ``[1, D*N]`` tensor. This rewrites the batch axes of inputs and outputs
    to a symbolic ``N`` and any such Reshape target to ``[-1, D]``. A model without the
    quirk is returned unchanged (as a copy).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    dim = embedding_dim(model)
    for value in list(model.graph.input) + list(model.graph.output):
        shape = value.type.tensor_type.shape
        if shape.dim and shape.dim[0].dim_value == 1:
            shape.dim[0].dim_param = "N"
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[node.input[1]])
        if target.ndim == 1 and len(target) == 2 and target[0] == 1:
            fixed = numpy_helper.from_array(np.array([-1, dim], dtype=target.dtype), node.input[1])
            inits[node.input[1]].CopyFrom(fixed)
    return model


class IdentityEmbedder:
    """onnxruntime identity embedder (insightface ``ArcFaceONNX``), batched.

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
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


class TorchIdentityEncoder(nn.Module):
    """Frozen, differentiable identity encoder converted from the registered ONNX.

    Input: (B, 3, H, W) float RGB in [-1, 1], faces on the ArcFace template at any square
    size (resized to the model side with antialiased bilinear interpolation).
    Output: (B, D) float32 L2-normalised embeddings.

    Built once and passed to losses/evaluators; never loaded by path inside a loss.
    """

    def __init__(self, store: ModelStore, name: str):
        super().__init__()
        from onnx2torch import convert

        spec = store.spec(name)
        graph = batchable(onnx.load(str(store.path(name))))
        self.name = name
        self.dim = embedding_dim(graph)
        self.input_size = int(spec.input.shape[-1])
        self.net = convert(graph)
        # [-1, 1] → 0..255 → (x - mean) / std, folded into one affine map.
        self.register_buffer("scale", torch.tensor(127.5 / spec.input.std))
        self.register_buffer("shift", torch.tensor((127.5 - spec.input.mean) / spec.input.std))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TorchIdentityEncoder:
        """Stays in eval mode: the encoder is a frozen helper."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        feats = self.net(x * self.scale + self.shift)
        return F.normalize(feats.reshape(x.shape[0], -1).float(), dim=1)
