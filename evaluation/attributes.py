"""Attribute metrics: how well a swap keeps the target's pose, expression and gaze.

* pose error — L2 norm of the (yaw, pitch, roll) difference in degrees, FSA-Net
  (FaceShifter/GHOST "pose" metric with a different head-pose model);
* expression error — FaceMesh 468 landmarks of swap and target, the swap's similarity-
  aligned onto the target's (Procrustes), mean point distance over the inter-ocular
  distance (landmark stand-in for the 3DMM expression metric, which needs a 3DMM model);
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
