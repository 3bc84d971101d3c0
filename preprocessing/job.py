"""The ``prepare`` job: read sources → detect (Ray) → filter → shards (Ray) → manifest.

Runs on a local ``ray.init()`` or, unchanged, on a cluster (``RAY_ADDRESS`` set by
``ray job submit``). Outputs, under the stage folder:

``manifest.parquet``  one row per input file (kept or rejected, with its reason)
``shards/*.tar``      WebDataset shards of kept faces (``train-*`` and ``eval-*``)
``dataset.json``      the dataset card that training and evaluation read
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.identity import IdentityEmbedder
from infra.models import ModelStore, file_sha256
from infra.paths import ProjectPaths
from infra.raycluster import ray_session
from preprocessing.config import PrepareConfig
from preprocessing.dataset_card import CropInfo, DatasetCard, EmbeddingInfo, ModelRef, SplitInfo
from preprocessing.detect_pass import DetectFaces
from preprocessing.filters import assign_split, decide, plan_shards
from preprocessing.records import (
    DETECTION_SCHEMA,
    KEPT,
    MANIFEST_SCHEMA,
    REJECTED,
    InputItem,
    Reason,
)
from preprocessing.shard_pass import WriteShards
from preprocessing.sources import read_sources

log = logging.getLogger(__name__)


def split_listed_twice(items: list[InputItem]) -> tuple[list[InputItem], list[dict]]:
    """Unique items, plus detection-schema rows rejecting repeated listings of one file."""
    seen: Counter[str] = Counter()
    unique, repeats = [], []
    for item in items:
        seen[item.key] += 1
        if seen[item.key] == 1:
            unique.append(item)
            continue
        row = {f.name: None for f in DETECTION_SCHEMA}
        row.update(item.to_row())
        row.update(
            key=f"{item.key}-{seen[item.key] - 1}",
            reason=Reason.LISTED_TWICE,
            detail=f"same source and path as key {item.key}",
        )
        repeats.append(row)
    return unique, repeats


def _actor_args(cfg: PrepareConfig) -> dict:
    import ray.data

    return {
        "compute": ray.data.ActorPoolStrategy(size=cfg.ray.num_actors),
        "num_cpus": cfg.ray.cpus_per_actor,
        "num_gpus": cfg.ray.gpus_per_actor or None,
        "batch_format": "pyarrow",
    }


def detect_all(items: list[InputItem], cfg: PrepareConfig, models_dir: Path) -> pd.DataFrame:
    """Pass 1 on Ray: one detection row per item."""
    import ray.data

    ds = ray.data.from_items([i.to_row() for i in items])
    ds = ds.map_batches(
        DetectFaces,
        fn_constructor_kwargs={"cfg": cfg, "models_dir": str(models_dir)},
        batch_size=cfg.ray.batch_size,
        **_actor_args(cfg),
    )
    return _collect(ds)


def _collect(ds) -> pd.DataFrame:
    import ray

    tables = ray.get(ds.to_arrow_refs())
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()


def write_all_shards(
    plans: list[dict],
    decisions: pd.DataFrame,
    cfg: PrepareConfig,
    models_dir: Path,
    shard_dir: Path,
) -> pd.DataFrame:
    """Pass 2 on Ray: one task per shard; returns per-key outcomes (key, shard, ok, detail)."""
    import ray.data

    if not plans:
        return pd.DataFrame(columns=["key", "shard", "ok", "detail"])
    by_key = decisions.set_index("key")
    cols = [
        "key",
        "source",
        "listed",
        "path",
        "identity",
        "split",
        "width",
        "height",
        "det_score",
        "bbox",
        "landmarks",
    ]

    def rows_of(keys: list[str]) -> str:
        sub = by_key.loc[keys].reset_index()[cols]
        records = sub.to_dict(orient="records")
        for r in records:
            r["bbox"] = [float(v) for v in r["bbox"]]
            r["landmarks"] = [float(v) for v in r["landmarks"]]
        return json.dumps(records)

    specs = [{"shard": p["shard"], "rows": rows_of(p["keys"])} for p in plans]
    ds = ray.data.from_items(specs, override_num_blocks=len(specs))
    ds = ds.map_batches(
        WriteShards,
        fn_constructor_kwargs={
            "cfg": cfg,
            "models_dir": str(models_dir),
            "shard_dir": str(shard_dir),
        },
        batch_size=1,
        **_actor_args(cfg),
    )
    return _collect(ds)


def run_prepare(cfg: PrepareConfig, paths: ProjectPaths, out_dir: Path) -> DatasetCard:
    """Run the whole stage; returns the dataset card (also written to ``out_dir``).

    Raises :class:`infra.models.ModelError` before any work when a model is missing.
    """
    t0 = time.perf_counter()
    store = ModelStore(paths.models_dir)
    det_path = store.path(cfg.detection.model)
    embedder = IdentityEmbedder(store, cfg.identity_model)  # verifies + reads the dimension

    items, repeats = split_listed_twice(read_sources(cfg.sources, paths))
    log.info(
        "prepare: %d input files (%d repeated listings)", len(items) + len(repeats), len(repeats)
    )

    shard_dir = out_dir / "shards"
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    with ray_session(cfg.ray.address, cfg.ray.num_cpus):
        t_det = time.perf_counter()
        detections = (
            detect_all(items, cfg, paths.models_dir)
            if items
            else pd.DataFrame(columns=DETECTION_SCHEMA.names)
        )
        if repeats:
            detections = pd.concat([detections, pd.DataFrame(repeats)], ignore_index=True)
        decisions, funnel = decide(detections, cfg)
        decisions["split"] = assign_split(decisions, cfg.split)
        log.info("detection pass: %.1f s", time.perf_counter() - t_det)

        t_write = time.perf_counter()
        kept = decisions[decisions["status"] == KEPT]
        plans = plan_shards(kept, cfg.shard_size)
        outcomes = write_all_shards(plans, decisions, cfg, paths.models_dir, shard_dir)
        log.info("shard pass: %.1f s", time.perf_counter() - t_write)

    decisions = _merge_outcomes(decisions, outcomes, funnel)
    manifest = _write_manifest(decisions, out_dir)
    card = _dataset_card(cfg, store, det_path, embedder, manifest, funnel, shard_dir, out_dir)
    card.save(out_dir)
    log.info(
        "prepare done in %.1f s: %d kept, %d rejected",
        time.perf_counter() - t0,
        card.num_samples,
        card.num_inputs - card.num_samples,
    )
    return card


def _merge_outcomes(
    decisions: pd.DataFrame, outcomes: pd.DataFrame, funnel: list[dict]
) -> pd.DataFrame:
    df = decisions.copy()
    df["shard"] = None
    if len(outcomes):
        out = outcomes.set_index("key")
        idx = df["key"].isin(out.index)
        df.loc[idx, "shard"] = df.loc[idx, "key"].map(out["shard"])
        failed = df["key"].map(out["ok"]).eq(False)
        df.loc[failed, "status"] = REJECTED
        df.loc[failed, "reason"] = Reason.ANNOTATE_ERROR
        df.loc[failed, "detail"] = df.loc[failed, "key"].map(out["detail"])
        df.loc[failed, ["split", "shard"]] = None
        funnel.append(
            {
                "step": "annotated",
                "rejected": int(failed.sum()),
                "remaining": int((df.status == KEPT).sum()),
            }
        )
    return df


def _write_manifest(decisions: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    df = decisions.sort_values("key", kind="stable").reset_index(drop=True)
    for col in ("bbox", "landmarks"):
        df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float)) else list(v))
    table = pa.Table.from_pandas(
        df[MANIFEST_SCHEMA.names], schema=MANIFEST_SCHEMA, preserve_index=False
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "manifest.parquet")
    return df


def _dataset_card(
    cfg, store, det_path, embedder, manifest, funnel, shard_dir, out_dir
) -> DatasetCard:
    kept = manifest[manifest["status"] == KEPT]
    splits = {}
    for split, group in kept.groupby("split"):
        shards = sorted(group["shard"].unique())
        splits[split] = SplitInfo(
            shards=[str((shard_dir / f"{s}.tar").relative_to(out_dir)) for s in shards],
            num_samples=len(group),
            identities={
                k: int(v)
                for k, v in group["identity"].fillna("").value_counts().sort_index().items()
            },
        )
    return DatasetCard(
        num_inputs=len(manifest),
        num_samples=len(kept),
        splits=splits,
        crop=CropInfo(template=cfg.align.template, size=cfg.align.crop_size),
        embedding=EmbeddingInfo(
            name=cfg.identity_model, sha256=store.spec(cfg.identity_model).sha256, dim=embedder.dim
        ),
        detector=ModelRef(name=cfg.detection.model, sha256=file_sha256(det_path)),
        funnel=funnel,
        rejections={
            k: int(v)
            for k, v in manifest.loc[manifest.status == REJECTED, "reason"]
            .value_counts()
            .sort_index()
            .items()
        },
        settings=cfg.model_dump(mode="json"),
    )
