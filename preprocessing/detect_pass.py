"""Pass 1 of ``prepare``: decode and detect every input (a Ray Data actor UDF).

Every input yields exactly one output row (schema :data:`DETECTION_SCHEMA`): either the
measurements of the chosen face (the largest) or a rejection reason from decoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from infra.models import ModelStore
from preprocessing.config import PrepareConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from preprocessing.records import DETECTION_SCHEMA, Reason


class DetectFaces:
    """Callable class for ``Dataset.map_batches``: holds one detector per actor.

    Parameters
    ----------
    cfg : the prepare config.
    models_dir : directory of verified weights.
    """

    def __init__(self, cfg: PrepareConfig, models_dir: str):
        store = ModelStore(models_dir)
        self.cfg = cfg
        self.detector = FaceDetector(
            store.path(cfg.detection.model),
            cfg.detection,
            threads=cfg.ray.threads_per_actor,
            use_gpu=cfg.ray.gpus_per_actor > 0,
        )

    def measure(self, row: dict) -> dict:
        """Decode + detect one input row; returns one detection-schema row."""
        out = {
            **row,
            "reason": None,
            "detail": "",
            "width": 0,
            "height": 0,
            "num_detections": 0,
            "num_faces": 0,
            "det_padded": False,
            "det_score": None,
            "face_size": None,
            "bbox": None,
            "landmarks": None,
        }
        decoded = load_image(Path(row["path"]), self.cfg.max_image_pixels)
        out.update(width=decoded.width, height=decoded.height)
        if decoded.image is None:
            out.update(reason=decoded.reason, detail=decoded.detail)
            return out
        try:
            faces = self.detector.detect(decoded.image)
        except Exception as e:  # a model failure on one image must not end the job
            out.update(reason=Reason.DETECT_ERROR, detail=f"{type(e).__name__}: {e}")
            return out
        out.update(
            num_detections=len(faces),
            num_faces=faces.count(self.cfg.detection.min_relative_size),
            det_padded=faces.padded,
        )
        if len(faces):
            out.update(
                det_score=float(faces.scores[0]),
                face_size=float(faces.sides[0]),
                bbox=faces.boxes[0].astype(np.float32).tolist(),
                landmarks=faces.landmarks[0].reshape(-1).astype(np.float32).tolist(),
            )
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self.measure(r) for r in batch.to_pylist()]
        return pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA)
