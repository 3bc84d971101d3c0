"""Identity recognisers for evaluation — models that training never sees.

* ``dlib_resnet``: dlib's ResNet face descriptor (128-d, from the ``face-recognition-models``
  package) with its 5-point shape predictor, run on the ArcFace-aligned crops (rank-1 1.0
  on the 100 LFW faces of ``../shared/faces``).
* any registered ONNX recognizer (ArcFace/CosFace) other than the one the dataset's
  embeddings, and so the identity loss, came from.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from infra.identity import IdentityEmbedder
from infra.models import ModelStore


class Recognizer(Protocol):
    """``embed((N, S, S, 3) uint8 RGB ArcFace-aligned crops) -> (N, D) float32``, rows
    L2-normalised."""

    name: str

    def embed(self, faces: np.ndarray) -> np.ndarray: ...


class DlibRecognizer:
    """dlib ResNet descriptor; the 5-point shape predictor locates the face inside a fixed
    rectangle of the aligned crop (the inner 80 %), then dlib aligns its own 150-px chip."""

    name = "dlib_resnet"

    def __init__(self, store: ModelStore):
        import dlib

        self.shape = dlib.shape_predictor(str(store.path("dlib_shape_predictor_5")))
        self.net = dlib.face_recognition_model_v1(str(store.path("dlib_resnet")))
        self._rect = dlib.rectangle

    def embed(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S, 3) uint8 faces, got {faces.shape} {faces.dtype}")
        out = np.zeros((len(faces), 128), np.float32)
        for i, face in enumerate(faces):
            face = np.ascontiguousarray(face)
            s = face.shape[0]
            rect = self._rect(int(0.1 * s), int(0.1 * s), int(0.9 * s) - 1, int(0.95 * s) - 1)
            out[i] = np.asarray(self.net.compute_face_descriptor(face, self.shape(face, rect)))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class OnnxRecognizer:
    """A registered ONNX recognizer through :class:`infra.identity.IdentityEmbedder`."""

    def __init__(self, store: ModelStore, name: str):
        self.name = name
        self.embedder = IdentityEmbedder(store, name)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        return self.embedder.embed(faces)


def build_recognizer(name: str, store: ModelStore, training_model: str) -> Recognizer:
    """The evaluation recognizer. Raises ValueError when ``name`` is the model the training
    identity loss used (its scores would reward overfitting to it)."""
    if name == training_model:
        raise ValueError(
            f"evaluate.recognizer {name!r} is the identity model training optimised; "
            "choose an independent one (dlib_resnet, or another registered recognizer)"
        )
    if name == "dlib_resnet":
        return DlibRecognizer(store)
    if store.spec(name).task != "recognition":
        raise ValueError(f"{name!r} is not a recognition model")
    return OnnxRecognizer(store, name)
