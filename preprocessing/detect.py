"""Face detection with 5-point landmarks (InsightFace SCRFD via ``insightface.model_zoo``).

Images are detected in batches (:meth:`FaceDetector.detect_batch`): images whose detector
input side is the same are letterboxed exactly as insightface's ``SCRFD.detect`` does and run
as one onnxruntime call on a batch-major copy of the graph (:func:`infra.onnx_graph.batch_major`);
each image's slice of the raw head outputs is then decoded by insightface's own
``SCRFD.detect`` (anchor decoding, threshold, NMS), which is handed that slice instead of
running the network again.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
from insightface.model_zoo.scrfd import SCRFD

from infra.onnx_graph import batch_major
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
    batch_size : images per network call in :meth:`detect_batch`.
    """

    def __init__(
        self,
        model_path: Path,
        cfg: DetectionConfig,
        threads: int = 1,
        use_gpu: bool = False,
        batch_size: int = 1,
    ):
        self.cfg = cfg
        self.batch_size = max(1, int(batch_size))
        graph = batch_major(onnx.load(str(model_path))).SerializeToString()
        self.session = make_session(graph, threads=threads, use_gpu=use_gpu)
        self.model = SCRFD(model_file=str(model_path), session=self.session)
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

    def _letterbox(self, bgr: np.ndarray, side: int) -> np.ndarray:
        """The (side, side, 3) detector image of ``SCRFD.detect``: the image resized to fit,
        aspect kept, at the top-left of a black square."""
        h, w = bgr.shape[:2]
        if h / w > 1.0:
            new_h, new_w = side, int(side / (h / w))
        else:
            new_w, new_h = side, int(side * (h / w))
        out = np.zeros((side, side, 3), np.uint8)
        out[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h))
        return out

    def _head_outputs(self, images: list[np.ndarray], side: int) -> list[list[np.ndarray]]:
        """Raw SCRFD head outputs of each BGR image at one input side, ``batch_size`` images
        per network call; returns per image the list of outputs insightface expects."""
        per_image: list[list[np.ndarray]] = []
        for start in range(0, len(images), self.batch_size):
            part = [self._letterbox(b, side) for b in images[start : start + self.batch_size]]
            blob = cv2.dnn.blobFromImages(
                part,
                1.0 / self.model.input_std,
                (side, side),
                (self.model.input_mean,) * 3,
                swapRB=True,
            )
            outs = self.session.run(self.model.output_names, {self.model.input_name: blob})
            n = len(part)
            split = [o.reshape(n, -1, o.shape[-1]) for o in outs]
            per_image += [[o[i] for o in split] for i in range(n)]
        return per_image

    @contextlib.contextmanager
    def _replay(self, outputs: list[np.ndarray], side: int):
        """Make ``self.model`` decode ``outputs`` instead of running its network (instance
        attributes shadow insightface's ``_session_for_input_size``/``_prepare_input_blob``)."""
        model = self.model
        model._session_for_input_size = lambda size: _Replay(outputs)
        model._prepare_input_blob = lambda img, size: np.empty((1, 3, side, side), np.float32)
        try:
            yield
        finally:
            del model._session_for_input_size, model._prepare_input_blob

    def _detect_many(self, bgrs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(det (K, 5), kps (K, 5, 2)) per BGR image, images grouped by input side."""
        if self.model.fmc * (3 if self.model.use_kps else 2) != len(self.model.output_names):
            raise RuntimeError("unexpected SCRFD outputs")
        if not self.model.use_kps:
            raise RuntimeError(
                "detector model has no keypoint head; use an SCRFD *_bnkps/kps model"
            )
        groups: dict[int, list[int]] = defaultdict(list)
        for i, b in enumerate(bgrs):
            groups[self.input_side(*b.shape[:2])].append(i)
        results: list = [None] * len(bgrs)
        for side, idx in groups.items():
            outputs = self._head_outputs([bgrs[i] for i in idx], side)
            for i, out in zip(idx, outputs, strict=True):
                with self._replay(out, side):
                    results[i] = self.model.detect(bgrs[i], input_size=(side, side), max_num=0)
        return results

    def detect(self, rgb: np.ndarray) -> FaceDetections:
        """Detect faces in one (H, W, 3) uint8 RGB image (see :meth:`detect_batch`)."""
        return self.detect_batch([rgb])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[FaceDetections]:
        """Detect faces in (H, W, 3) uint8 RGB images, ``batch_size`` images per network call.

        When nothing is found in an image and ``cfg.pad_on_miss > 0`` it is padded with black
        on every side and searched again (the misses as one more batch); coordinates are mapped
        back to the original image. The result of an image does not depend on the batch it
        ran in beyond float rounding (tested: boxes within 0.01 px).

        Raises
        ------
        RuntimeError : the model has no keypoint head.
        """
        bgrs = [np.ascontiguousarray(rgb[..., ::-1]) for rgb in images]
        found = self._detect_many(bgrs)
        padded = [False] * len(bgrs)
        misses = [i for i, (det, _) in enumerate(found) if len(det) == 0]
        if misses and self.cfg.pad_on_miss > 0:
            pads = [round(self.cfg.pad_on_miss * max(bgrs[i].shape[:2])) for i in misses]
            big = [
                cv2.copyMakeBorder(bgrs[i], p, p, p, p, cv2.BORDER_CONSTANT, value=0)
                for i, p in zip(misses, pads, strict=True)
            ]
            for i, p, (det, kps) in zip(misses, pads, self._detect_many(big), strict=True):
                det[:, :4] -= p
                kps -= p
                found[i], padded[i] = (det, kps), len(det) > 0
        return [_sorted(det, kps, pad) for (det, kps), pad in zip(found, padded, strict=True)]


class _Replay:
    """A stand-in onnxruntime session that returns precomputed outputs."""

    def __init__(self, outputs: list[np.ndarray]):
        self.outputs = outputs

    def run(self, names, feed) -> list[np.ndarray]:
        return self.outputs


def _sorted(det: np.ndarray, kps: np.ndarray, padded: bool) -> FaceDetections:
    """Detections sorted by decreasing box area."""
    boxes = det[:, :4].astype(np.float32)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order = np.argsort(-area, kind="stable")
    return FaceDetections(
        boxes=boxes[order],
        scores=det[order, 4].astype(np.float32),
        landmarks=kps[order].astype(np.float32).reshape(-1, 5, 2),
        padded=padded,
    )
