"""The face-parser interface and the CelebAMask-HQ label set every backend returns.

Class ids (CelebAMask-HQ, Lee et al. 2020, ``CelebAMask-HQ/face_parsing`` label order):
0 background, 1 skin, 2 nose, 3 eyeglasses, 4 left eye, 5 right eye, 6 left brow,
7 right brow, 8 left ear, 9 right ear, 10 mouth (inside, between the lips), 11 upper lip,
12 lower lip, 13 hair, 14 hat, 15 earring, 16 necklace, 17 neck, 18 cloth. "Left" is the
subject's left: the image right of a frontal face.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

#: Names of the 19 CelebAMask-HQ classes, indexed by class id.
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "skin",
    "nose",
    "eyeglasses",
    "left_eye",
    "right_eye",
    "left_brow",
    "right_brow",
    "left_ear",
    "right_ear",
    "mouth",
    "upper_lip",
    "lower_lip",
    "hair",
    "hat",
    "earring",
    "necklace",
    "neck",
    "cloth",
)

#: Number of classes.
NUM_CLASSES = len(CLASS_NAMES)

#: Face-interior classes every backend predicts (skin, nose, eyes, brows, mouth, lips).
FACE_INTERIOR: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 10, 11, 12)

#: All class ids.
ALL_CLASSES: tuple[int, ...] = tuple(range(NUM_CLASSES))


class BackendUnavailableError(RuntimeError):
    """A parsing backend cannot be built: its weight file is absent or fails its checksum.

    The message names the missing file and the URL a connected machine downloads it from.
    """


@runtime_checkable
class MaskBackend(Protocol):
    """A face parser producing CelebAMask-HQ label maps from aligned face crops.

    Attributes
    ----------
    name : registry name (``unet``, ``bisenet``, ``parsenet``, ``facemesh``).
    crop_template : alignment template the crops must use (see
        :func:`preprocessing.align.estimate_transform`); ``"ffhq"`` for parsers trained on
        CelebAMask-HQ framing.
    crop_size : side in pixels of the crops :meth:`parse` expects.
    classes : class ids the backend can output (others never appear in its maps).
    needs_landmarks : True when :meth:`parse` requires the 468 FaceMesh landmarks.
    """

    name: str
    crop_template: str
    crop_size: int
    classes: tuple[int, ...]
    needs_landmarks: bool

    def parse(self, faces: np.ndarray, landmarks468: np.ndarray | None = None) -> np.ndarray:
        """Label maps of aligned faces.

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB crops aligned with ``crop_template``,
            ``S == crop_size``.
        landmarks468 : (N, 468, 3) float FaceMesh landmarks in crop pixels; required when
            ``needs_landmarks``, ignored otherwise.

        Returns
        -------
        (N, S, S) uint8 CelebAMask-HQ class ids in [0, 18].

        Raises
        ------
        ValueError : wrong shape or dtype, or landmarks missing when required.
        """
        ...


def check_faces(faces: np.ndarray, crop_size: int | None = None) -> np.ndarray:
    """Validate a batch of crops; returns it as a contiguous (N, S, S, 3) uint8 array.

    Parameters
    ----------
    faces : (N, S, S, 3) uint8 RGB crops.
    crop_size : expected ``S``; None accepts any square size.

    Raises
    ------
    ValueError : not (N, S, S, 3) uint8 with square crops of the expected side.
    """
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.shape[1] != faces.shape[2]:
        raise ValueError(f"expected (N, S, S, 3) RGB crops, got shape {faces.shape}")
    if faces.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops, got {faces.dtype}")
    if crop_size is not None and faces.shape[1] != crop_size:
        raise ValueError(f"expected {crop_size}x{crop_size} crops, got {faces.shape[1:3]}")
    return np.ascontiguousarray(faces)
