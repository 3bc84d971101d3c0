"""Face restoration ("super-resolution") of a swapped face, after pasting.

GHOST (seed 001: abstract and conclusion) adds a super-resolution block because the
generator's output is blurry; the seed gives no more detail. The project runs a registered
restoration model instead, GFPGAN v1.4 (Wang et al. 2021) as the ONNX file the facefusion
project publishes, through onnxruntime (no extra package). The project's choices: it runs
on the frame after the swap is pasted (as facefusion's face enhancer does), on GFPGAN's own
512-px alignment (the five-point template of facexlib's ``FaceRestoreHelper``), and the
restored face is pasted back through the FaceMesh face-oval mask with a Gaussian edge, so
only the face changes.
"""

from __future__ import annotations

import logging

import numpy as np

from evaluation.blend import face_mask_from_landmarks, paste_back
from infra.geometry import transform_points
from infra.models import ModelFileMissingError, ModelStore, model_names
from infra.ort import make_session
from preprocessing.align import similarity_transform

log = logging.getLogger(__name__)

#: Five-point template (eyes, nose, mouth corners) of a 512-px GFPGAN input: the values of
#: facexlib's ``FaceRestoreHelper`` for ``face_size=512`` (the FFHQ alignment GFPGAN was
#: trained on), pixels.
GFPGAN_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)

#: Gaussian σ of the restored face's mask edge, fraction of the 512-px crop side.
EDGE_BLUR = 0.02


class FaceRestorer:
    """A registered restoration model (task ``restoration``): (1, 3, S, S) RGB in [-1, 1]
    in, the restored face in [-1, 1] out, on the GFPGAN 512-px alignment (scaled to ``S``).

    Parameters
    ----------
    store : models directory; ``name`` must be present.
    name : registry name (e.g. ``gfpgan_1.4``).
    threads : onnxruntime intra-op threads.

    Raises
    ------
    infra.models.ModelError : the file is missing or altered.
    """

    def __init__(self, store: ModelStore, name: str, threads: int = 2):
        self.name = name
        spec = store.spec(name)
        self.session = make_session(store.path(name), threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.size = int(spec.input.shape[-1])
        self.mean, self.std = spec.input.mean, spec.input.std
        self.template = GFPGAN_512 * (self.size / 512)

    def restore(
        self, frame: np.ndarray, landmarks5: np.ndarray, landmarks468: np.ndarray
    ) -> np.ndarray:
        """Restore one face of a frame.

        Parameters
        ----------
        frame : (H, W, 3) uint8 RGB.
        landmarks5 : (5, 2) face landmarks, frame pixels.
        landmarks468 : (468, 2+) FaceMesh landmarks of the face, frame pixels (the mask).

        Returns
        -------
        (H, W, 3) uint8 RGB; pixels outside the face's warped mask are unchanged.
        """
        import cv2

        M = similarity_transform(np.asarray(landmarks5, np.float64), self.template)
        crop = cv2.warpAffine(frame, M, (self.size, self.size), flags=cv2.INTER_LINEAR)
        x = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        y = self.session.run(None, {self.input_name: x})[0][0]
        face = np.clip(np.rint(y.transpose(1, 2, 0) * self.std + self.mean), 0, 255)
        mask = face_mask_from_landmarks(transform_points(landmarks468[:, :2], M), self.size)
        return paste_back(frame, face.astype(np.uint8), M, mask, EDGE_BLUR * self.size)


def build_restorer(setting: str, store: ModelStore, threads: int = 2) -> FaceRestorer | None:
    """The restoration model ``swap.super_resolution`` asks for: None for ``off``; for
    ``auto`` the first registered restoration model whose file is present (None, logged,
    when none is); a registry name must be present (ModelError otherwise)."""
    if setting == "off":
        return None
    if setting != "auto":
        return FaceRestorer(store, setting, threads)
    for name in model_names("restoration"):
        try:
            return FaceRestorer(store, name, threads)
        except ModelFileMissingError:
            continue
    log.info("no restoration model in %s: swapped faces are not restored", store.models_dir)
    return None
