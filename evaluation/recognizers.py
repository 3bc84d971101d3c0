"""Recognisers: the identity encoders evaluation scores swaps with, ones training never used.

An identity encoder maps an ArcFace-aligned face to an L2-normalised identity embedding
(:class:`infra.identity.IdentityEncoder`). The dataset's embeddings and training's identity
loss come from one such encoder (``card.embedding.name``); a *recogniser* is any other one,
so the scores do not reward overfitting to the encoder training optimised. A recogniser has
the interface of :class:`~infra.identity.IdentityEncoder` (``name``, ``dim``, ``embed``), so
the two are interchangeable:

* ``dlib_resnet``: dlib's ResNet face descriptor (128-d, from the ``face-recognition-models``
  package) with its 5-point shape predictor, run on the ArcFace-aligned crops (rank-1 1.0
  on the 100 LFW faces of ``../shared/faces``);
* any registered ONNX recognition model (ArcFace/CosFace) other than the training one, run
  as an :class:`~infra.identity.IdentityEncoder`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from infra.geometry import l2_normalize
from infra.identity import IdentityEncoder
from infra.models import ModelStore


class Recognizer(Protocol):
    """The identity-encoder interface a recogniser offers.

    Attributes
    ----------
    name : registry name of the model.
    dim : embedding dimension D.
    """

    name: str
    dim: int

    def embed(self, faces_rgb: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB ArcFace-aligned crops → (N, D) float32, rows
        L2-normalised."""
        ...


class DlibRecognizer:
    """dlib ResNet descriptor as a recogniser; the 5-point shape predictor locates the face
    inside a fixed rectangle of the aligned crop (the inner 80 %), then dlib aligns its own
    150-px chip.

    Parameters
    ----------
    store : model store holding ``dlib_shape_predictor_5`` and ``dlib_resnet``.
    """

    name = "dlib_resnet"
    dim = 128

    def __init__(self, store: ModelStore):
        import dlib

        self.shape = dlib.shape_predictor(str(store.path("dlib_shape_predictor_5")))
        self.net = dlib.face_recognition_model_v1(str(store.path("dlib_resnet")))
        self._rect = dlib.rectangle

    def embed(self, faces_rgb: np.ndarray) -> np.ndarray:
        """Embed aligned faces.

        Parameters
        ----------
        faces_rgb : (N, S, S, 3) uint8 RGB crops on the ArcFace template (any S).

        Returns
        -------
        (N, 128) float32, rows L2-normalised.

        Raises
        ------
        ValueError : ``faces_rgb`` is not (N, S, S, 3) uint8.
        """
        faces = np.asarray(faces_rgb)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"expected (N, S, S, 3) uint8 faces, got {faces.shape} {faces.dtype}")
        out = np.zeros((len(faces), self.dim), np.float32)
        for i, face in enumerate(faces):
            face = np.ascontiguousarray(face)
            s = face.shape[0]
            rect = self._rect(int(0.1 * s), int(0.1 * s), int(0.9 * s) - 1, int(0.95 * s) - 1)
            out[i] = np.asarray(self.net.compute_face_descriptor(face, self.shape(face, rect)))
        return l2_normalize(out, axis=1)


def build_recognizer(name: str, store: ModelStore, training_model: str) -> Recognizer:
    """The evaluation recogniser.

    Parameters
    ----------
    name : ``dlib_resnet`` or a registered ``recognition`` model (``evaluate.recognizer``).
    store : model store.
    training_model : the identity encoder training used (``card.embedding.name``).

    Returns
    -------
    :class:`DlibRecognizer`, or an :class:`infra.identity.IdentityEncoder` for an ONNX model.

    Raises
    ------
    ValueError : ``name`` is ``training_model`` (its scores would reward overfitting to it),
        or not a recognition model.
    """
    if name == training_model:
        raise ValueError(
            f"evaluate.recognizer {name!r} is the identity encoder training optimised; "
            "choose an independent one (dlib_resnet, or another registered recognition model)"
        )
    if name == "dlib_resnet":
        return DlibRecognizer(store)
    if store.spec(name).task != "recognition":
        raise ValueError(f"{name!r} is not a recognition model")
    return IdentityEncoder(store, name)
