"""MediaPipe FaceMesh: 468 3-D face landmarks from a face box (ONNX via onnxruntime).

Model: ``facemesh_468`` in :data:`infra.models.REGISTRY` (MediaPipe ``face_landmark``,
Apache-2.0, ONNX export from iperov/DeepFaceLive). Contract: input ``input_1``
[1, 192, 192, 3] NHWC RGB float32; output ``conv2d_21`` [1, 1, 1, 1404] = 468 × (x, y, z)
in crop pixels. The export fixes the batch to 1 and ends in a Reshape whose constant target
is ``[1, 1, 1, 1404]``; ``infra.onnx_graph.batchable`` rewrites both in memory so faces run
as a batch.

Landmark indices follow MediaPipe's canonical face mesh (e.g. 1 nose tip, 61 and 291 mouth
corners, 33/133 and 362/263 eye corners); index sets of the face regions are in
:mod:`preprocessing.parsing.facemesh_regions`.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx

from infra.models import ModelStore
from infra.onnx_graph import batchable
from infra.ort import make_session

#: Registry name of the FaceMesh landmark model.
MODEL_NAME = "facemesh_468"

#: Input side of the network, pixels.
INPUT_SIZE = 192

#: Crop side as a multiple of the longer side of an SCRFD face box. MediaPipe crops 1.5× its
#: own (BlazeFace) box, which is tighter than SCRFD's; for SCRFD boxes the agreement with the
#: SCRFD 5 points is best and flat over 1.15–1.35 and worse from 1.5 on (see ``FaceMesh``),
#: and the parsing mIoU of the ``facemesh`` mask backend peaks at 1.15–1.2.
DEFAULT_CROP_SCALE = 1.2

#: Pixel normalisation ``(x - mean) / std`` of 0–255 RGB: [0, 1] input, as the README says
#: (measured: [-1, 1] is 10 % worse, 0–255 fails).
DEFAULT_MEAN = 0.0
DEFAULT_STD = 255.0


def crop_matrix(bbox: np.ndarray, scale: float, size: int = INPUT_SIZE) -> np.ndarray:
    """(2, 3) float64 matrix mapping image pixels to the square FaceMesh crop.

    Parameters
    ----------
    bbox : (4,) ``x1, y1, x2, y2`` face box in image pixels.
    scale : crop side as a multiple of the box's longer side.
    size : crop side in pixels.

    Returns
    -------
    ``M`` such that ``crop_xy = M[:, :2] @ image_xy + M[:, 2]``: a square of side
    ``scale * max(w, h)`` centred on the box centre, resized to ``size`` pixels.

    Raises
    ------
    ValueError : the box has no area.
    """
    x1, y1, x2, y2 = np.asarray(bbox, dtype=np.float64).reshape(4)
    side = scale * max(x2 - x1, y2 - y1)
    if not side > 0:
        raise ValueError(f"face box {bbox} has no area")
    k = size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[k, 0.0, size / 2 - k * cx], [0.0, k, size / 2 - k * cy]])


class FaceMesh:
    """468-point MediaPipe FaceMesh on an axis-aligned square crop around a face box.

    Parameters
    ----------
    store : model store holding ``facemesh_468`` (raises ``ModelFileMissingError`` /
        ``ModelChecksumError`` from :meth:`ModelStore.path` when absent or altered).
    threads : onnxruntime intra-op threads.
    use_gpu : run on CUDA when onnxruntime-gpu is installed.
    crop_scale : crop side as a multiple of the longer box side.
    mean, std : input normalisation of 0–255 RGB pixels, ``(x - mean) / std``.

    Notes
    -----
    Measured on 30 real LFW faces (3 per identity of ``lfw_subset_krasserm``; SCRFD-2.5G
    boxes and 5 points; FaceMesh eye centres = mean of the 16 eye-contour points, nose tip =
    point 1, mouth corners = 61 and 291), the defaults put the FaceMesh points at a mean
    distance of 0.046 inter-ocular distances from the SCRFD points (worst image 0.070;
    nose 0.079, other points 0.035–0.040). With the detector at a fixed 640 input instead
    of the adaptive size the mean is 0.060 with one image at 0.41 (a poor SCRFD result).
    """

    def __init__(
        self,
        store: ModelStore,
        threads: int = 1,
        use_gpu: bool = False,
        crop_scale: float = DEFAULT_CROP_SCALE,
        mean: float = DEFAULT_MEAN,
        std: float = DEFAULT_STD,
    ):
        graph = batchable(onnx.load(str(store.path(MODEL_NAME))))
        self.session = make_session(graph.SerializeToString(), threads=threads, use_gpu=use_gpu)
        self.input_name = self.session.get_inputs()[0].name
        self.crop_scale = float(crop_scale)
        self.mean = float(mean)
        self.std = float(std)

    def predict(self, rgb: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """Landmarks of one face.

        Parameters
        ----------
        rgb : (H, W, 3) uint8 RGB image.
        bbox : (4,) ``x1, y1, x2, y2`` face box in image pixels (e.g. from SCRFD).

        Returns
        -------
        (468, 3) float32 ``x, y, z`` in image pixels; ``z`` is depth relative to the face
        centre, scaled like ``x`` (smaller = closer to the camera).

        Raises
        ------
        ValueError : ``rgb`` is not (H, W, 3) uint8 or the box has no area.
        """
        return self.predict_batch(rgb, np.asarray(bbox, dtype=np.float64).reshape(1, 4))[0]

    def predict_batch(self, rgb: np.ndarray, bboxes: np.ndarray) -> np.ndarray:
        """Landmarks of several faces of one image, run as one batch.

        Parameters
        ----------
        rgb : (H, W, 3) uint8 RGB image.
        bboxes : (N, 4) face boxes ``x1, y1, x2, y2`` in image pixels.

        Returns
        -------
        (N, 468, 3) float32 landmarks in image pixels (see :meth:`predict`).

        Raises
        ------
        ValueError : ``rgb`` is not (H, W, 3) uint8 or a box has no area.
        """
        boxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        return self.predict_faces([rgb] * len(boxes), boxes)

    def predict_faces(self, images: list[np.ndarray], bboxes: np.ndarray) -> np.ndarray:
        """Landmarks of N faces, one per (image, box) pair, in one network call.

        Parameters
        ----------
        images : N (H, W, 3) uint8 RGB images (the same image may repeat).
        bboxes : (N, 4) face boxes ``x1, y1, x2, y2`` in pixels of the matching image.

        Returns
        -------
        (N, 468, 3) float32 landmarks in image pixels (see :meth:`predict`); a face's result
        does not depend on the others in the batch beyond float rounding.

        Raises
        ------
        ValueError : an image is not (H, W, 3) uint8, a box has no area, or the counts differ.
        """
        boxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images for {len(boxes)} boxes")
        for rgb in images:
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        if len(boxes) == 0:
            return np.zeros((0, 468, 3), np.float32)
        mats = [crop_matrix(b, self.crop_scale) for b in boxes]
        crops = np.stack(
            [
                cv2.warpAffine(
                    rgb,
                    M,
                    (INPUT_SIZE, INPUT_SIZE),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=(0, 0, 0),
                )
                for rgb, M in zip(images, mats, strict=True)
            ]
        )
        x = (crops.astype(np.float32) - self.mean) / self.std
        out = self.session.run(None, {self.input_name: x})[0].reshape(len(boxes), 468, 3)
        result = np.empty((len(boxes), 468, 3), np.float32)
        for i, M in enumerate(mats):
            k = M[0, 0]
            result[i, :, :2] = (out[i, :, :2] - M[:, 2]) / k
            result[i, :, 2] = out[i, :, 2] / k
        return result
