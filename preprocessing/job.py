"""The ``prepare`` job: read sources → detect (Ray) → filter → annotate + shards (Ray).

Runs on a private local Ray instance or, unchanged, on a cluster (``RAY_ADDRESS`` set by
``ray job submit``). Both Ray passes are resumable: pass 1 keeps one Parquet file per
chunk of inputs (``detections/``), pass 2 one sidecar per shard plan (``shards/*.json``),
each with a fingerprint of its inputs and settings; a rerun after a crash redoes only
what is missing and produces the same bytes. Outputs, under the stage folder:

``manifest.parquet``     one row per input file (kept or rejected, reason, measurements)
``shards/*.tar``         WebDataset shards of kept faces (``train-*`` and ``eval-*``)
``dataset.json``         the dataset card that training and evaluation read
``funnel.{csv,md,png}``  the filter funnel
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.config import flatten
from infra.identity import IdentityEmbedder
from infra.models import ModelStore, file_sha256
from infra.paths import ProjectPaths
from infra.raycluster import ray_session
from preprocessing.annotate import REGION_NAMES, resolve_mask_backend
from preprocessing.config import PrepareConfig
from preprocessing.dataset_card import (
    CropInfo,
    DatasetCard,
    EmbeddingInfo,
    ModelRef,
    ShardInfo,
    SplitInfo,
)
from preprocessing.detect_pass import DetectFaces, detection_fingerprint, read_chunk
from preprocessing.filters import assign_split, decide, plan_shards
from preprocessing.funnel_report import write_funnel
from preprocessing.records import (
    DETECTION_SCHEMA,
    KEPT,
    MANIFEST_SCHEMA,
    REJECTED,
    InputItem,
    Reason,
)
from preprocessing.shard_pass import WriteShards, read_sidecar, shard_fingerprint
from preprocessing.sources import read_sources

log = logging.getLogger(__name__)

BACKEND_MODELS = {
    "unet": "unet_faceparsing_19cls",
    "bisenet": "facexlib_bisenet",
    "parsenet": "facexlib_parsenet",
    "facemesh": "facemesh_468",
}


def split_listed_twice(items: list[InputItem]) -> list[InputItem]:
    """Mark repeated listings of one file (same source and path) as rejected items."""
    seen: Counter[str] = Counter()
    out = []
    for item in items:
        seen[item.key] += 1
        if seen[item.key] == 1:
            out.append(item)
        else:
            out.append(
                InputItem(
                    **{
                        **item.to_row(),
                        "key": f"{item.key}-{seen[item.key] - 1}",
                        "reason": Reason.LISTED_TWICE,
                        "detail": f"same source and path as key {item.key}",
                    }
                )
            )
    return out


def _actor_args(cfg: PrepareConfig) -> dict:
    import ray.data

    return {
        "compute": ray.data.ActorPoolStrategy(size=cfg.ray.num_actors),
        "num_cpus": cfg.ray.cpus_per_actor,
        "num_gpus": cfg.ray.gpus_per_actor or None,
        "batch_format": "pyarrow",
        "batch_size": 1,
    }


def _run_specs(specs: list[dict], udf, kwargs: dict, cfg: PrepareConfig) -> list[pa.Table]:
    import ray
    import ray.data

    if not specs:
        return []
    ds = ray.data.from_items(specs, override_num_blocks=len(specs))
    ds = ds.map_batches(udf, fn_constructor_kwargs=kwargs, **_actor_args(cfg))
    return ray.get(ds.to_arrow_refs())


def detect_all(
    items: list[InputItem], cfg: PrepareConfig, store: ModelStore, out_dir: Path
) -> pd.DataFrame:
    """Pass 1: one detection row per item, chunk files reused when their fingerprint matches."""
    todo = sorted((i for i in items if i.reason is None), key=lambda i: i.key)
    chunk_dir = out_dir / "detections"
    size = cfg.ray.chunk_size
    tables, specs = [], []
    for n, start in enumerate(range(0, len(todo), size)):
        chunk = todo[start : start + size]
        path = chunk_dir / f"chunk-{n:06d}.parquet"
        fp = detection_fingerprint(cfg, store, [i.key for i in chunk])
        table = read_chunk(path, fp)
        if table is not None:
            tables.append(table)
        else:
            specs.append(
                {
                    "chunk": n,
                    "path": str(path),
                    "fingerprint": fp,
                    "rows": json.dumps([i.to_row() for i in chunk]),
                }
            )
    n_chunks = -(-len(todo) // size)
    _remove_stale(chunk_dir, r"chunk-(\d+)\.parquet", lambda m: int(m.group(1)) < n_chunks)
    log.info(
        "detection pass: %d chunks, %d already done, %d to run", n_chunks, len(tables), len(specs)
    )
    tables += _run_specs(specs, DetectFaces, {"cfg": cfg, "models_dir": str(store.models_dir)}, cfg)
    rejected = [i for i in items if i.reason is not None]
    if rejected:
        rows = [{**{f: None for f in DETECTION_SCHEMA.names}, **i.to_row()} for i in rejected]
        for r in rows:
            r.update(width=0, height=0, num_detections=0, num_faces=0, det_padded=False)
        tables.append(pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA))
    if not tables:
        return DETECTION_SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def _remove_stale(folder: Path, pattern: str, keep) -> None:
    """Delete files in ``folder`` whose names match ``pattern`` but fail ``keep(match)``,
    and leftover temporary files."""
    if not folder.is_dir():
        return
    rx = re.compile(pattern)
    for f in folder.iterdir():
        m = rx.fullmatch(f.name)
        if f.name.endswith(".tmp") or (m and not keep(m)):
            f.unlink()


def shard_settings(cfg: PrepareConfig, store: ModelStore, backend: str | None) -> dict:
    """Everything besides the rows that a shard's bytes depend on."""
    models = [cfg.identity_model, "facemesh_468"] + ([BACKEND_MODELS[backend]] if backend else [])
    return {
        "annotate": cfg.annotate.model_dump(mode="json"),
        "shards": cfg.shards.model_dump(mode="json"),
        "max_image_pixels": cfg.max_image_pixels,
        "mask_backend": backend,
        "models": {m: store.spec(m).sha256 or file_sha256(store.path(m)) for m in models},
    }


def write_all_shards(
    plans: list[dict],
    decisions: pd.DataFrame,
    cfg: PrepareConfig,
    store: ModelStore,
    backend: str | None,
    shard_dir: Path,
) -> pd.DataFrame:
    """Pass 2: one task per shard plan; finished plans are read from their sidecars."""
    by_key = decisions.set_index("key")
    cols = [
        "key",
        "source",
        "listed",
        "path",
        "identity",
        "mask_path",
        "split",
        "width",
        "height",
        "det_score",
        "bbox",
        "landmarks",
        "yaw",
        "pitch",
        "roll",
        "eye_roll",
    ]
    settings = shard_settings(cfg, store, backend)
    done, specs = [], []
    for p in plans:
        records = by_key.loc[p["keys"]].reset_index()[cols].to_dict(orient="records")
        for r in records:
            r["bbox"] = [float(v) for v in r["bbox"]]
            r["landmarks"] = [float(v) for v in r["landmarks"]]
            for k in ("identity", "mask_path"):  # pandas gives NaN for missing strings
                r[k] = r[k] if isinstance(r[k], str) else None
        rows = json.dumps(records)
        fp = shard_fingerprint(rows, settings)
        outcomes = read_sidecar(shard_dir, p["shard"], fp)
        if outcomes is not None:
            done.extend(outcomes)
        else:
            specs.append({"shard": p["shard"], "rows": rows, "fingerprint": fp})
    names = {p["shard"] for p in plans}
    _remove_stale(
        shard_dir,
        r"(.+?)(-\d+)?\.(tar|json)",
        lambda m: m.group(1) in names or f"{m.group(1)}{m.group(2) or ''}" in names,
    )
    log.info(
        "shard pass: %d shard plans, %d already done, %d to run",
        len(plans),
        len(plans) - len(specs),
        len(specs),
    )
    kwargs = {"cfg": cfg, "models_dir": str(store.models_dir), "shard_dir": str(shard_dir)}
    tables = _run_specs(specs, WriteShards, kwargs, cfg)
    frames = [t.to_pandas() for t in tables] + ([pd.DataFrame(done)] if done else [])
    if not frames:
        return pd.DataFrame(columns=["key", "shard", "ok", "detail", "bytes"])
    return pd.concat(frames, ignore_index=True)


def run_prepare(
    cfg: PrepareConfig, paths: ProjectPaths, out_dir: Path, track: bool = True
) -> DatasetCard:
    """Run the whole stage; returns the dataset card (also written to ``out_dir``).

    Raises :class:`infra.models.ModelError` before any work when a model is missing, and
    ``BackendUnavailableError`` when an explicitly chosen mask backend has no weights.
    """
    t0 = time.perf_counter()
    store = ModelStore(paths.models_dir)
    det_path = store.path(cfg.detection.model)
    for name in ("fsanet_1x1", "fsanet_var", "facemesh_468"):
        store.path(name)
    embedder = IdentityEmbedder(store, cfg.identity_model)  # verifies + reads the dimension
    backend = resolve_mask_backend(cfg.annotate.mask_backend, store)
    backend_name = backend.name if backend is not None else None
    del backend

    items = split_listed_twice(read_sources(cfg.sources, paths))
    log.info("prepare: %d input files from %d source(s)", len(items), len(cfg.sources))
    out_dir.mkdir(parents=True, exist_ok=True)
    shard_dir = out_dir / "shards"
    with ray_session(cfg.ray.address, cfg.ray.num_cpus):
        t = time.perf_counter()
        detections = detect_all(items, cfg, store, out_dir)
        t_detect = time.perf_counter() - t
        decisions, funnel, thresholds = decide(detections, cfg)
        decisions["split"] = assign_split(decisions, cfg.split)
        plans = plan_shards(decisions[decisions["status"] == KEPT], cfg.shards.max_samples)
        t = time.perf_counter()
        outcomes = write_all_shards(plans, decisions, cfg, store, backend_name, shard_dir)
        t_shards = time.perf_counter() - t

    decisions = _merge_outcomes(decisions, outcomes, funnel)
    manifest = _write_manifest(decisions, out_dir)
    card = _dataset_card(
        cfg,
        store,
        det_path,
        embedder,
        backend_name,
        manifest,
        funnel,
        thresholds,
        outcomes,
        shard_dir,
        out_dir,
    )
    card.save(out_dir)
    report = write_funnel(funnel, out_dir)
    wall = time.perf_counter() - t0
    timings = {
        "Timing/prepare_wall_s": wall,
        "Timing/detect_pass_s": t_detect,
        "Timing/shard_pass_s": t_shards,
    }
    log.info(
        "prepare done in %.1f s (detection %.1f s, shards %.1f s): %d kept, %d rejected",
        wall,
        t_detect,
        t_shards,
        card.num_samples,
        card.num_inputs - card.num_samples,
    )
    if track:
        _track(cfg, paths, card, report, timings, out_dir)
    return card


def _merge_outcomes(
    decisions: pd.DataFrame, outcomes: pd.DataFrame, funnel: list[dict]
) -> pd.DataFrame:
    df = decisions.copy()
    df["shard"] = None
    if len(outcomes):
        out = outcomes.drop_duplicates("key").set_index("key")
        df["shard"] = df["key"].map(out["shard"])
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
        df[col] = df[col].map(
            lambda v: list(v) if v is not None and not isinstance(v, float) else None
        )
    table = pa.Table.from_pandas(
        df[MANIFEST_SCHEMA.names], schema=MANIFEST_SCHEMA, preserve_index=False
    )
    pq.write_table(table, out_dir / "manifest.parquet")
    return df


def _identity_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Kept faces per identity ("" for unlabelled), sorted by identity."""
    return {k: int(v) for k, v in rows["identity"].fillna("").value_counts().sort_index().items()}


def _dataset_card(
    cfg,
    store,
    det_path,
    embedder,
    backend,
    manifest,
    funnel,
    thresholds,
    outcomes,
    shard_dir,
    out_dir,
) -> DatasetCard:
    kept = manifest[manifest["status"] == KEPT]
    rel = lambda s: str((shard_dir / f"{s}.tar").relative_to(out_dir))  # noqa: E731
    ok = outcomes[outcomes["ok"].astype(bool)] if len(outcomes) else outcomes
    bytes_per = ok.groupby("shard")["bytes"].sum().to_dict() if len(ok) else {}
    index = {}
    for shard, group in kept.groupby("shard"):
        index[rel(shard)] = ShardInfo(
            split=group["split"].iloc[0],
            num_samples=len(group),
            bytes=int(bytes_per.get(shard, 0)),
            identities=_identity_counts(group),
        )
    splits = {}
    for split, group in kept.groupby("split"):
        splits[split] = SplitInfo(
            shards=sorted(rel(s) for s in group["shard"].unique()),
            num_samples=len(group),
            identities=_identity_counts(group),
        )
    primary = cfg.annotate.crops[0]
    annotations = {
        "files": {
            "jpg": f"primary aligned crop, {primary.template} template, {primary.size} px",
            **{f"{c.name}.jpg": f"{c.template} crop, {c.size} px" for c in cfg.annotate.crops[1:]},
            "id.npy": f"L2-normalised identity embedding, float32 ({embedder.dim},)",
            "lmk468.npy": "FaceMesh landmarks, float32 (468, 3), primary-crop pixels"
            if cfg.annotate.landmarks_468
            else None,
            "mask.png": f"19-class CelebAMask-HQ label map ({backend}), primary-crop pixels"
            if backend
            else None,
            "regions.png": f"RAFSwap regions as bits {list(REGION_NAMES)} (bit 0 first)"
            if backend
            else None,
            "gtmask.png": "ground-truth label map in the primary crop (sources with masks)",
            "json": "identity, source, path, split, bbox, 5-point landmarks (image and crop), "
            "pose (yaw, pitch, roll, eye_roll in degrees), crop transforms (2x3 image->crop)",
        },
        "mask_backend": backend,
        "mask_model": {
            "name": BACKEND_MODELS[backend],
            "sha256": store.spec(BACKEND_MODELS[backend]).sha256,
        }
        if backend
        else None,
        "crops": [c.model_dump() for c in cfg.annotate.crops],
    }
    return DatasetCard(
        num_inputs=len(manifest),
        num_samples=len(kept),
        splits=splits,
        crop=CropInfo(template=primary.template, size=primary.size),
        embedding=EmbeddingInfo(
            name=cfg.identity_model, sha256=store.spec(cfg.identity_model).sha256, dim=embedder.dim
        ),
        detector=ModelRef(name=cfg.detection.model, sha256=file_sha256(det_path)),
        funnel=funnel,
        thresholds=thresholds,
        annotations=annotations,
        shard_index=index,
        rejections={
            k: int(v)
            for k, v in manifest.loc[manifest.status == REJECTED, "reason"]
            .value_counts()
            .sort_index()
            .items()
        },
        settings=cfg.model_dump(mode="json"),
    )


def _track(
    cfg: PrepareConfig,
    paths: ProjectPaths,
    card: DatasetCard,
    report: list[Path],
    timings: dict,
    out_dir: Path,
) -> None:
    from infra.tracking import MlflowSink, Tracker

    tracker = Tracker(
        [MlflowSink(paths, cfg.experiment, f"prepare-{time.strftime('%Y%m%d-%H%M%S')}")]
    )
    tracker.set_tags({"stage": "prepare"})
    tracker.log_params(flatten({"prepare": cfg.model_dump(mode="json")}))
    counts = {f"Data/{s['step']}_remaining": s["remaining"] for s in card.funnel}
    tracker.log_summary(
        {**counts, "Data/kept": card.num_samples, "Data/inputs": card.num_inputs, **timings}, step=0
    )
    for path in [*report, out_dir / "dataset.json"]:
        tracker.log_artifact(path, "prepare")
    tracker.close()
