"""Pass 1 of ``prepare``: decode, hash, detect and measure every input (Ray Data UDF).

Work is split into chunks of inputs. The driver writes the inputs once to
``detections/inputs.parquet`` (:data:`INPUT_SCHEMA`, one row group per chunk); each task
reads its chunk's row group, measures it and writes ``detections/chunk-NNNNNN.parquet``
(schema :data:`DETECTION_SCHEMA`, one row per input) with a fingerprint of the inputs and
settings in its metadata, so a rerun skips the chunks that are already done. Rows keep the
items' ``path``/``mask_path`` as listed (relative to ``paths.data_root``); the actors open
them through :meth:`ProjectPaths.data_path`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from infra.models import ModelStore
from infra.ort import require_cuda
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


#: What a detection task reads of each input (the first columns of the detection rows).
INPUT_SCHEMA = pa.schema([DETECTION_SCHEMA.field(n) for n in DETECTION_SCHEMA.names[:6]])


def write_inputs(table: pa.Table, path: Path, chunk_size: int) -> None:
    """Write the inputs to detect atomically, one row group of ``chunk_size`` rows per chunk
    (row group ``n`` is chunk ``n``)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=chunk_size)
    os.replace(tmp, path)


def read_inputs(path: Path, chunk: int) -> list[dict]:
    """Chunk ``chunk``'s input rows (:data:`INPUT_SCHEMA` dicts)."""
    return pq.ParquetFile(path).read_row_group(chunk).to_pylist()


def chunk_done(path: Path, fingerprint: str) -> bool:
    """True when the chunk's result file exists with this fingerprint."""
    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(FINGERPRINT_KEY, b"").decode() == fingerprint


def write_chunk(table: pa.Table, path: Path, fingerprint: str) -> None:
    """Write atomically (temporary file, then rename) with the fingerprint attached."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata({FINGERPRINT_KEY: fingerprint.encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class DetectFaces:
    """Callable class for ``Dataset.map_batches`` over chunk specs (``{"chunk", "path",
    "fingerprint", "inputs"}``); holds the detector and head-pose models of one actor.
    Results go to the chunk's Parquet file; the task returns one summary row per chunk.

    Parameters
    ----------
    cfg : prepare config (``cfg.detection``, ``cfg.ray`` threads and GPUs).
    paths : project paths: models from ``paths.models_dir``; input rows' paths resolve
        against ``paths.data_root``.
    """

    def __init__(self, cfg: PrepareConfig, paths: ProjectPaths):
        store = ModelStore(paths.models_dir)
        threads, gpu = cfg.ray.threads_per_actor, cfg.ray.device == "cuda"
        if gpu:
            require_cuda()
        cv2.setNumThreads(threads)
        self.cfg = cfg
        self.paths = paths
        self.detector = FaceDetector(
            store.path(cfg.detection.model),
            cfg.detection,
            threads=threads,
            use_gpu=gpu,
            batch_size=cfg.ray.model_batch,
        )
        self.pose = HeadPose(store, margin=cfg.detection.pose_margin, threads=threads, use_gpu=gpu)

    def _start(self, row: dict) -> tuple[dict, np.ndarray | None]:
        """A detection-schema row for ``row`` with what decoding tells (size, pHash, or the
        reason it does not decode), and the decoded RGB image or None."""
        out = {name: None for name in DETECTION_SCHEMA.names}
        out.update(
            {k: row[k] for k in ("key", "source", "path", "listed", "identity", "mask_path")}
        )
        out.update(detail="", width=0, height=0, num_detections=0, num_faces=0, det_padded=False)
        decoded = load_image(self.paths.data_path(row["path"]), self.cfg.max_image_pixels)
        out.update(width=decoded.width, height=decoded.height)
        if decoded.image is None:
            out.update(reason=decoded.reason, detail=decoded.detail)
            return out, None
        try:
            out["phash"] = str(imagehash.phash(Image.fromarray(decoded.image)))
        except Exception as e:
            out.update(reason=Reason.DETECT_ERROR, detail=f"{type(e).__name__}: {e}")
            return out, None
        return out, decoded.image

    def _measure(self, outs: list[dict], images: list[np.ndarray]) -> None:
        """Detect in ``images`` as a batch and fill their rows: measurements of the largest
        face (box, 5 landmarks, score, size = sqrt of box area in px, FSA-Net yaw/pitch/roll
        and eye-landmark roll in degrees). Raises whatever a model raises."""
        found = self.detector.detect_batch(images)
        with_face = [i for i, faces in enumerate(found) if len(faces)]
        poses = self.pose.predict_batch(
            [images[i] for i in with_face], [found[i].boxes[0] for i in with_face]
        )
        for out, faces in zip(outs, found, strict=True):
            out.update(
                num_detections=len(faces),
                num_faces=faces.count(self.cfg.detection.min_relative_size),
                det_padded=faces.padded,
            )
        for i, (yaw, pitch, roll) in zip(with_face, poses, strict=True):
            faces = found[i]
            outs[i].update(
                det_score=float(faces.scores[0]),
                face_size=float(faces.sides[0]),
                bbox=faces.boxes[0].tolist(),
                landmarks=faces.landmarks[0].reshape(-1).tolist(),
                yaw=float(yaw),
                pitch=float(pitch),
                roll=float(roll),
                eye_roll=eye_roll(faces.landmarks[0]),
            )

    def measure_batch(self, rows: list[dict]) -> list[dict]:
        """Decode, pHash, detect and measure inputs; one detection-schema row per input.

        The decoded images go through the models together (``cfg.ray.model_batch`` per call).
        If a model fails on the batch, its images are measured one by one so the failure is
        recorded as ``detect_error`` on the image that caused it; nothing here raises for
        bad input.
        """
        started = [self._start(r) for r in rows]
        live = [(out, img) for out, img in started if img is not None]
        try:
            self._measure([o for o, _ in live], [img for _, img in live])
        except Exception:  # a model failure on one image must not end the job
            for out, img in live:
                try:
                    self._measure([out], [img])
                except Exception as e:
                    out.update(reason=Reason.DETECT_ERROR, detail=f"{type(e).__name__}: {e}")
        return [out for out, _ in started]

    def measure(self, row: dict) -> dict:
        """:meth:`measure_batch` of one input."""
        return self.measure_batch([row])[0]

    def run_chunk(self, spec: dict) -> int:
        """Measure one chunk and write its result file; returns its row count."""
        todo, n = read_inputs(Path(spec["inputs"]), spec["chunk"]), self.cfg.ray.model_batch
        rows = [r for i in range(0, len(todo), n) for r in self.measure_batch(todo[i : i + n])]
        write_chunk(
            pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA),
            Path(spec["path"]),
            spec["fingerprint"],
        )
        return len(rows)

    def __call__(self, batch: pa.Table) -> pa.Table:
        specs = batch.to_pylist()
        counts = [self.run_chunk(spec) for spec in specs]
        return pa.table({"chunk": [s["chunk"] for s in specs], "rows": counts})
