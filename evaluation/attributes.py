"""Attribute metrics: how well a swap keeps the target's pose, expression and gaze.

* pose error — L2 norm of the (yaw, pitch, roll) difference in degrees, FSA-Net
  (FaceShifter/GHOST "pose" metric with a different head-pose model);
* expression error — FaceMesh 468 landmarks of swap and target, the swap's similarity-
  aligned onto the target's (Procrustes), mean point distance over the inter-ocular
  distance. It includes face shape, so a swap that rightly takes the source's shape scores
  worse (landmark stand-in for the 3DMM expression metric, which needs a 3DMM model);
* expression opening error — mean absolute difference of five ratios that measure the
  expression and not the face's build: mouth opening over mouth width, each eye's opening
  over its width, each brow's height above its eye over the inter-ocular distance;
* eye-landmark error — GHOST's ``Eye_ldmk`` (seed 001 Table I): mean distance of the 32
  eye-contour points, not aligned, over the inter-ocular distance;
* SSIM of self-swaps (torchmetrics).
"""

from __future__ import annotations

import numpy as np
import torch

from infra.geometry import transform_points
from infra.models import ModelStore
from preprocessing.align import similarity_transform
from preprocessing.facemesh import FaceMesh
from preprocessing.headpose import HeadPose
from preprocessing.parsing.facemesh_regions import LEFT_EYE, RIGHT_EYE

EYES = LEFT_EYE + RIGHT_EYE


def interocular(landmarks: np.ndarray) -> float:
    """Distance (px) between the eye centres (means of the FaceMesh eye contours)."""
    lm = np.asarray(landmarks)[:, :2]
    return float(np.linalg.norm(lm[LEFT_EYE].mean(0) - lm[RIGHT_EYE].mean(0)))


def expression_error(swap: np.ndarray, target: np.ndarray) -> float:
    """Procrustes landmark error: (468, ≥2) swap landmarks similarity-aligned to the
    target's, mean point distance / target inter-ocular distance. 0 for identical shapes."""
    s, t = np.asarray(swap, np.float64)[:, :2], np.asarray(target, np.float64)[:, :2]
    aligned = transform_points(s, similarity_transform(s, t))
    return float(np.linalg.norm(aligned - t, axis=1).mean() / max(interocular(t), 1e-6))


#: FaceMesh points of the opening measures: (upper, lower, left corner, right corner).
MOUTH = (13, 14, 78, 308)  # inner lips
RIGHT_EYE_LIDS = (159, 145, 33, 133)  # subject's right eye
LEFT_EYE_LIDS = (386, 374, 263, 362)  # subject's left eye
#: (brow middle, upper lid) of each eye.
BROWS = ((105, 159), (334, 386))


def expression_openings(landmarks: np.ndarray) -> np.ndarray:
    """(5,) expression measures of (468, ≥2) FaceMesh landmarks, each a ratio of distances:
    mouth opening / mouth width, right and left eye opening / eye width, right and left
    brow-to-upper-lid height / inter-ocular distance. Unitless, invariant to scale and
    rotation, and to the face-outline, nose and jaw points a swap may take from its source."""
    lm = np.asarray(landmarks, np.float64)[:, :2]

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(lm[a] - lm[b]))

    openings = [
        dist(up, down) / max(dist(left, right), 1e-6)
        for up, down, left, right in (MOUTH, RIGHT_EYE_LIDS, LEFT_EYE_LIDS)
    ]
    iod = max(interocular(lm), 1e-6)
    brows = [dist(brow, lid) / iod for brow, lid in BROWS]
    return np.array(openings + brows)


def expression_opening_error(swap: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute difference of :func:`expression_openings` of swap and target: 0 when the
    swap keeps the target's mouth, eye and brow openings, whatever its face shape."""
    return float(np.abs(expression_openings(swap) - expression_openings(target)).mean())


def eye_landmark_error(swap: np.ndarray, target: np.ndarray) -> float:
    """GHOST eye-landmark error: mean distance of the eye-contour points (no alignment: the
    crops share one frame) / target inter-ocular distance."""
    s, t = np.asarray(swap)[EYES, :2], np.asarray(target)[EYES, :2]
    return float(np.linalg.norm(s - t, axis=1).mean() / max(interocular(target), 1e-6))


def pose_error(swap: np.ndarray, target: np.ndarray) -> np.ndarray:
    """L2 norm of (yaw, pitch, roll) differences, degrees; inputs (..., 3)."""
    return np.linalg.norm(np.asarray(swap) - np.asarray(target), axis=-1)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two (N, H, W, 3) uint8 image sets (torchmetrics, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ta = torch.from_numpy(np.asarray(a)).permute(0, 3, 1, 2).float() / 255
    tb = torch.from_numpy(np.asarray(b)).permute(0, 3, 1, 2).float() / 255
    return float(structural_similarity_index_measure(ta, tb, data_range=1.0))


class AttributeModels:
    """Head pose and FaceMesh landmarks of aligned crops, the face box given in crop pixels."""

    def __init__(self, store: ModelStore, threads: int = 1):
        self.pose = HeadPose(store, threads=threads)
        self.mesh = FaceMesh(store, threads=threads)

    def measure(self, crops: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 crops, (N, 4) boxes → (pose (N, 3) degrees, landmarks
        (N, 468, 3) crop pixels)."""
        poses = np.stack([self.pose.predict(c, b) for c, b in zip(crops, boxes, strict=True)])
        marks = np.stack([self.mesh.predict(c, b) for c, b in zip(crops, boxes, strict=True)])
        return poses, marks
