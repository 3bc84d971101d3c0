"""Pass 1 of ``prepare``: decode, hash, detect and measure every input (Ray Data UDF).

Work is split into chunks of inputs. Each task measures one chunk and writes
``detections/chunk-NNNNNN.parquet`` (schema :data:`DETECTION_SCHEMA`, one row per input)
with a fingerprint of the inputs and settings in its metadata, so a rerun skips the chunks
that are already done. Rows keep the items' ``path``/``mask_path`` as listed (relative to
``paths.data_root``); the actors open them through :meth:`ProjectPaths.data_path`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from infra.models import ModelStore
from infra.paths import ProjectPaths
from preprocessing.config import PrepareConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from preprocessing.headpose import MODELS as HEADPOSE_MODELS
from preprocessing.headpose import HeadPose, eye_roll
from preprocessing.records import DETECTION_SCHEMA, Reason

FINGERPRINT_KEY = b"fsp.fingerprint"
#: Layout of a chunk's rows; part of the fingerprint (2: paths relative to data_root).
CHUNK_LAYOUT = 2


def detection_fingerprint(cfg: PrepareConfig, store: ModelStore, keys: list[str]) -> str:
    """Hash of everything a chunk's detection rows depend on: its keys, the detection and
    decoding settings, the detector/pose model checksums and :data:`CHUNK_LAYOUT`."""
    payload = {
        "layout": CHUNK_LAYOUT,
        "keys": keys,
        "detection": cfg.detection.model_dump(mode="json"),
        "max_image_pixels": cfg.max_image_pixels,
        "models": [store.spec(n).sha256 for n in (cfg.detection.model, *HEADPOSE_MODELS)],
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_chunk(path: Path, fingerprint: str) -> pa.Table | None:
    """The chunk's table when its file exists with this fingerprint, else None."""
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    if meta.get(FINGERPRINT_KEY, b"").decode() != fingerprint:
        return None
    return pq.read_table(path)


def write_chunk(table: pa.Table, path: Path, fingerprint: str) -> None:
    """Write atomically (temporary file, then rename) with the fingerprint attached."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata({FINGERPRINT_KEY: fingerprint.encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class DetectFaces:
    """Callable class for ``Dataset.map_batches`` over chunk specs (``{"chunk", "path",
    "fingerprint", "rows"}``); holds the detector and head-pose models of one actor.

    Parameters
    ----------
    cfg : prepare config (``cfg.detection``, ``cfg.ray`` threads and GPUs).
    paths : project paths: models from ``paths.models_dir``; input rows' paths resolve
        against ``paths.data_root``.
    """

    def __init__(self, cfg: PrepareConfig, paths: ProjectPaths):
        store = ModelStore(paths.models_dir)
        threads, gpu = cfg.ray.threads_per_actor, cfg.ray.gpus_per_actor > 0
        cv2.setNumThreads(threads)
        self.cfg = cfg
        self.paths = paths
        self.detector = FaceDetector(
            store.path(cfg.detection.model), cfg.detection, threads=threads, use_gpu=gpu
        )
        self.pose = HeadPose(store, margin=cfg.detection.pose_margin, threads=threads, use_gpu=gpu)

    def measure(self, row: dict) -> dict:
        """Decode, pHash, detect and measure one input; returns one detection-schema row.

        Measurements belong to the largest face: box, 5 landmarks, score, size
        (sqrt of box area, px), FSA-Net yaw/pitch/roll and eye-landmark roll (degrees).
        Failures become a ``reason``; nothing here raises for bad input.
        """
        out = {name: None for name in DETECTION_SCHEMA.names}
        out.update(
            {k: row[k] for k in ("key", "source", "path", "listed", "identity", "mask_path")}
        )
        out.update(detail="", width=0, height=0, num_detections=0, num_faces=0, det_padded=False)
        decoded = load_image(self.paths.data_path(row["path"]), self.cfg.max_image_pixels)
        out.update(width=decoded.width, height=decoded.height)
        if decoded.image is None:
            out.update(reason=decoded.reason, detail=decoded.detail)
            return out
        try:
            out["phash"] = str(imagehash.phash(Image.fromarray(decoded.image)))
            faces = self.detector.detect(decoded.image)
            out.update(
                num_detections=len(faces),
                num_faces=faces.count(self.cfg.detection.min_relative_size),
                det_padded=faces.padded,
            )
            if len(faces):
                yaw, pitch, roll = self.pose.predict(decoded.image, faces.boxes[0])
                out.update(
                    det_score=float(faces.scores[0]),
                    face_size=float(faces.sides[0]),
                    bbox=faces.boxes[0].tolist(),
                    landmarks=faces.landmarks[0].reshape(-1).tolist(),
                    yaw=float(yaw),
                    pitch=float(pitch),
                    roll=float(roll),
                    eye_roll=eye_roll(faces.landmarks[0]),
                )
        except Exception as e:  # a model failure on one image must not end the job
            out.update(reason=Reason.DETECT_ERROR, detail=f"{type(e).__name__}: {e}")
        return out

    def run_chunk(self, spec: dict) -> pa.Table:
        rows = [self.measure(r) for r in json.loads(spec["rows"])]
        table = pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA)
        write_chunk(table, Path(spec["path"]), spec["fingerprint"])
        return table

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [self.run_chunk(spec) for spec in batch.to_pylist()]
        return pa.concat_tables(tables) if tables else DETECTION_SCHEMA.empty_table()
