"""Pass 2 of ``prepare``: align, embed and write one WebDataset shard per task.

Each task gets a shard plan (name + ordered rows) and writes ``<shard>.tar`` atomically
(temporary file, then rename). A sample holds:

``<key>.jpg``     aligned RGB crop (JPEG), ``crop_size`` × ``crop_size``
``<key>.id.npy``  L2-normalised identity embedding, float32 (D,)
``<key>.json``    identity, source, path, split, bbox, landmarks (image and crop pixels),
                  the 2×3 image→crop transform, detector score, image size, template.

A face that fails here is returned as a rejection, so the manifest still accounts for it.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import webdataset as wds

from infra.identity import IdentityEmbedder
from infra.models import ModelStore
from preprocessing.align import align_face, transform_points
from preprocessing.config import PrepareConfig
from preprocessing.decode import load_image

OUTCOME_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("ok", pa.bool_()),
        ("detail", pa.string()),
    ]
)


def encode_sample(
    key: str, crop_rgb: np.ndarray, embedding: np.ndarray, meta: dict, quality: int
) -> dict:
    """The WebDataset dict of one sample (all values bytes)."""
    ok, jpg = cv2.imencode(".jpg", crop_rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    buf = io.BytesIO()
    np.save(buf, embedding.astype(np.float32), allow_pickle=False)
    return {
        "__key__": key,
        "jpg": jpg.tobytes(),
        "id.npy": buf.getvalue(),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


class WriteShards:
    """Callable class for ``Dataset.map_batches`` (batch = shard plans).

    Parameters
    ----------
    cfg : prepare config.
    models_dir : directory of verified weights.
    shard_dir : where ``<shard>.tar`` files are written (shared storage on a cluster).
    """

    def __init__(self, cfg: PrepareConfig, models_dir: str, shard_dir: str):
        self.cfg = cfg
        self.shard_dir = Path(shard_dir)
        self.embedder = IdentityEmbedder(
            ModelStore(models_dir),
            cfg.identity_model,
            threads=cfg.ray.threads_per_actor,
            use_gpu=cfg.ray.gpus_per_actor > 0,
        )

    def _prepare(self, row: dict) -> tuple[np.ndarray, np.ndarray, dict]:
        decoded = load_image(Path(row["path"]), self.cfg.max_image_pixels)
        if decoded.image is None:
            raise RuntimeError(
                f"{decoded.reason}: {decoded.detail} (file changed since detection?)"
            )
        size = self.cfg.align.crop_size
        kps = np.asarray(row["landmarks"], dtype=np.float64).reshape(5, 2)
        crop, M = align_face(decoded.image, kps, size, self.cfg.align.template)
        face112, _ = align_face(
            decoded.image, kps, self.embedder.input_size, self.cfg.align.template
        )
        meta = {
            "key": row["key"],
            "identity": row["identity"],
            "source": row["source"],
            "path": row["listed"],
            "split": row["split"],
            "width": row["width"],
            "height": row["height"],
            "bbox": [round(float(v), 2) for v in row["bbox"]],
            "landmarks": np.round(kps, 2).tolist(),
            "landmarks_aligned": np.round(transform_points(kps, M), 2).tolist(),
            "transform": np.round(M, 6).tolist(),
            "det_score": round(float(row["det_score"]), 4),
            "crop_size": size,
            "template": self.cfg.align.template,
        }
        return crop, face112, meta

    def write(self, plan: dict) -> list[dict]:
        """Write one shard; returns one outcome dict per planned key."""
        rows = json.loads(plan["rows"])
        outcomes, prepared = [], []
        for row in rows:
            try:
                prepared.append((row["key"], *self._prepare(row)))
            except Exception as e:
                outcomes.append(
                    {
                        "key": row["key"],
                        "shard": None,
                        "ok": False,
                        "detail": f"{type(e).__name__}: {e}",
                    }
                )
        if prepared:
            embeddings = self.embedder.embed(np.stack([p[2] for p in prepared]))
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            final = self.shard_dir / f"{plan['shard']}.tar"
            tmp = final.with_suffix(".tar.tmp")
            with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0.0) as sink:
                for (key, crop, _, meta), emb in zip(prepared, embeddings, strict=True):
                    sink.write(encode_sample(key, crop, emb, meta, self.cfg.align.jpeg_quality))
                    outcomes.append({"key": key, "shard": plan["shard"], "ok": True, "detail": ""})
            os.replace(tmp, final)
        return outcomes

    def __call__(self, batch: pa.Table) -> pa.Table:
        outcomes = [o for plan in batch.to_pylist() for o in self.write(plan)]
        return pa.Table.from_pylist(outcomes, schema=OUTCOME_SCHEMA)
