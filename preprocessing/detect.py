"""Face detection with 5-point landmarks (InsightFace SCRFD via ``insightface.model_zoo``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from insightface.model_zoo.scrfd import SCRFD

from infra.ort import make_session
from preprocessing.config import DetectionConfig

#: Detector input sides used for small images (each gets its own static-shape session).
ADAPTIVE_SIDES = (160, 320, 480)


@dataclass
class FaceDetections:
    """Faces found in one image, sorted by decreasing box area.

    Attributes
    ----------
    boxes : (N, 4) float32, ``x1, y1, x2, y2`` in image pixels.
    scores : (N,) float32 detector scores in [0, 1].
    landmarks : (N, 5, 2) float32 five points (eyes, nose, mouth corners) in pixels.
    padded : True when found only after padding the image (``pad_on_miss``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    padded: bool = False

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def sides(self) -> np.ndarray:
        """(N,) face size in pixels: sqrt(box width × box height)."""
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return np.sqrt(wh[:, 0] * wh[:, 1])

    def count(self, min_relative_size: float) -> int:
        """Faces that count: the largest plus those with side ≥ ``min_relative_size`` × its side."""
        if len(self) == 0:
            return 0
        sides = self.sides
        return int((sides >= min_relative_size * sides[0]).sum())


class FaceDetector:
    """SCRFD detector.

    Parameters
    ----------
    model_path : verified ONNX file (see :class:`infra.models.ModelStore`).
    cfg : detection settings (input size, score threshold, padding retry).
    threads : onnxruntime intra-op threads.
    use_gpu : run on CUDA when onnxruntime-gpu is installed.
    """

    def __init__(
        self, model_path: Path, cfg: DetectionConfig, threads: int = 1, use_gpu: bool = False
    ):
        self.cfg = cfg
        session = make_session(Path(model_path), threads=threads, use_gpu=use_gpu)
        self.model = SCRFD(model_file=str(model_path), session=session)
        self.model.prepare(
            ctx_id=0 if use_gpu else -1,
            input_size=(cfg.input_size, cfg.input_size),
            det_thresh=cfg.score_threshold,
        )

    def input_side(self, height: int, width: int) -> int:
        """Detector input side for an image: the configured size, or with ``adaptive_size``
        the smallest of 160/320/480 that holds the image without upscaling it further."""
        if self.cfg.adaptive_size:
            longest = max(height, width)
            for side in ADAPTIVE_SIDES:
                if longest <= side < self.cfg.input_size:
                    return side
        return self.cfg.input_size

    def _run(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        side = self.input_side(*bgr.shape[:2])
        det, kps = self.model.detect(bgr, input_size=(side, side), max_num=0)
        if kps is None:
            raise RuntimeError(
                "detector model has no keypoint head; use an SCRFD *_bnkps/kps model"
            )
        return det, kps

    def detect(self, rgb: np.ndarray) -> FaceDetections:
        """Detect faces in an (H, W, 3) uint8 RGB image.

        When nothing is found and ``cfg.pad_on_miss > 0`` the image is padded with black on
        every side and searched again; coordinates are mapped back to the original image.
        """
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        det, kps = self._run(bgr)
        padded = False
        if len(det) == 0 and self.cfg.pad_on_miss > 0:
            pad = round(self.cfg.pad_on_miss * max(bgr.shape[:2]))
            big = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
            det, kps = self._run(big)
            det[:, :4] -= pad
            kps -= pad
            padded = len(det) > 0
        boxes = det[:, :4].astype(np.float32)
        area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
            boxes[:, 3] - boxes[:, 1], 0, None
        )
        order = np.argsort(-area, kind="stable")
        return FaceDetections(
            boxes=boxes[order],
            scores=det[order, 4].astype(np.float32),
            landmarks=kps[order].astype(np.float32).reshape(-1, 5, 2),
            padded=padded,
        )
