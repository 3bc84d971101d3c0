"""The ``prepare`` stage (``fsp prepare``): read sources → detect (Ray) → filter → annotate +
shards (Ray). One entry point, :func:`prepare`.

Runs on a private local Ray instance or, unchanged, on a cluster (``RAY_ADDRESS`` set by
``ray job submit``). Both Ray passes are resumable: pass 1 keeps one Parquet file per
chunk of inputs (``detections/``), pass 2 one sidecar per shard plan (``shards/*.json``),
each with a fingerprint of its inputs and settings; a rerun after a crash redoes only
what is missing and produces the same bytes. Outputs, under the stage folder:

``manifest.parquet``     one row per input file (kept or rejected, reason, measurements)
``shards/*.tar``         WebDataset shards of kept faces (``train-*`` and ``eval-*``)
``dataset.json``         the dataset card that training and evaluation read
``funnel.{csv,md,png}``  the filter funnel

Input paths in the manifest and the detection chunks are relative to ``paths.data_root``
(:func:`preprocessing.sources.data_relative`), so the outputs hold no path of the machine.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from infra.config import flatten
from infra.dataset_format import (
    CropInfo,
    DatasetCard,
    EmbeddingInfo,
    ModelRef,
    ShardInfo,
    SplitInfo,
    describe_files,
)
from infra.identity import IdentityEncoder
from infra.models import ModelStore, file_sha256
from infra.paths import ProjectPaths
from infra.raycluster import ray_session
from preprocessing.annotate import REGION_NAMES, resolve_mask_backend
from preprocessing.config import PrepareConfig
from preprocessing.detect_pass import (
    INPUT_SCHEMA,
    DetectFaces,
    chunk_done,
    detection_fingerprint,
    write_inputs,
)
from preprocessing.facemesh import MODEL_NAME as FACEMESH_MODEL
from preprocessing.filters import assign_split, decide, plan_shards
from preprocessing.funnel_report import write_funnel
from preprocessing.headpose import MODELS as HEADPOSE_MODELS
from preprocessing.parsing import BACKENDS
from preprocessing.records import (
    DETECTION_SCHEMA,
    KEPT,
    MANIFEST_SCHEMA,
    REJECTED,
    InputItem,
    Reason,
)
from preprocessing.shard_pass import (
    PLANS_FILE,
    WriteShards,
    read_sidecar,
    shard_fingerprint,
    write_plans,
)
from preprocessing.sources import read_sources

log = logging.getLogger(__name__)

#: Shard folder, relative to the stage folder.
SHARD_DIR = "shards"
#: Manifest columns a shard task needs per face.
SHARD_COLUMNS = [
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


@dataclass(frozen=True)
class StageModels:
    """The stage's models, verified before any work (:func:`check_models`).

    Attributes
    ----------
    store : the model store of ``paths.models_dir``.
    detector_sha256 : SHA-256 of the detector file.
    embedding_dim : identity embedding size D, read from the model.
    mask_backend : label-map backend name, None for ``mask_backend: none``.
    """

    store: ModelStore
    detector_sha256: str
    embedding_dim: int
    mask_backend: str | None


def check_models(cfg: PrepareConfig, paths: ProjectPaths) -> StageModels:
    """Verify every model the stage uses and read what the card needs from them.

    Raises
    ------
    infra.models.ModelError
        A model file is missing or altered.
    BackendUnavailableError
        An explicitly chosen mask backend has no weights.
    """
    store = ModelStore(paths.models_dir)
    det_path = store.path(cfg.detection.model)
    for name in (*HEADPOSE_MODELS, FACEMESH_MODEL):
        store.path(name)
    dim = IdentityEncoder(store, cfg.identity_model).dim  # verifies + reads the dimension
    backend = resolve_mask_backend(cfg.annotate.mask_backend, store)
    return StageModels(
        store=store,
        detector_sha256=file_sha256(det_path),
        embedding_dim=dim,
        mask_backend=backend.name if backend is not None else None,
    )


def prepare(
    cfg: PrepareConfig, paths: ProjectPaths, out_dir: Path, track: bool = True
) -> DatasetCard:
    """Run the whole stage: models → sources → detection pass → funnel → shard pass →
    manifest, card and funnel report (→ MLflow when ``track``).

    Parameters
    ----------
    cfg : the ``prepare`` section of ``params.yaml``.
    paths : project paths (data root, models, tracking).
    out_dir : the stage folder (``paths.stage_dir("prepare")``); created when missing.
    track : log params, counts, timings and the report to MLflow.

    Returns
    -------
    DatasetCard
        The card, also written to ``out_dir/dataset.json``.

    Raises
    ------
    infra.models.ModelError
        Before any work, when a model is missing or altered.
    BackendUnavailableError
        When an explicitly chosen mask backend has no weights.
    infra.config.ConfigError
        When a source's files are missing or malformed.
    """
    t0 = time.perf_counter()
    models = check_models(cfg, paths)
    items = split_listed_twice(read_sources(cfg.sources, paths))
    log.info("prepare: %d input files from %d source(s)", len(items), len(cfg.sources))
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with ray_session(cfg.ray.address, cfg.ray.num_cpus):
        t = time.perf_counter()
        detections = detect_all(items, cfg, paths, out_dir)
        timings["Timing/detect_pass_s"] = time.perf_counter() - t
        decisions, funnel, thresholds, plans = filter_and_plan(detections, cfg)
        t = time.perf_counter()
        shard_dir = out_dir / SHARD_DIR
        outcomes = write_all_shards(plans, decisions, cfg, paths, models.mask_backend, shard_dir)
        timings["Timing/shard_pass_s"] = time.perf_counter() - t

    manifest = _write_manifest(_merge_outcomes(decisions, outcomes, funnel), out_dir)
    card = _dataset_card(cfg, models, manifest, funnel, thresholds, outcomes)
    card.save(out_dir)
    report = write_funnel(funnel, out_dir)
    timings = {"Timing/prepare_wall_s": time.perf_counter() - t0, **timings}
    log.info(
        "prepare done in %.1f s (detection %.1f s, shards %.1f s): %d kept, %d rejected",
        timings["Timing/prepare_wall_s"],
        timings["Timing/detect_pass_s"],
        timings["Timing/shard_pass_s"],
        card.num_samples,
        card.num_inputs - card.num_samples,
    )
    if track:
        _track(cfg, paths, card, report, timings, out_dir)
    return card


def split_listed_twice(items: list[InputItem]) -> list[InputItem]:
    """Mark repeated listings of one file (same source and path) as rejected items.

    The first listing keeps its key; the n-th repeat gets key ``<key>-<n-1>`` and reason
    ``listed_twice``.
    """
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


def filter_and_plan(
    detections: pd.DataFrame, cfg: PrepareConfig
) -> tuple[pd.DataFrame, list[dict], dict, list[dict]]:
    """The funnel (:func:`preprocessing.filters.decide`), the train/eval split of the kept
    faces and their shard plans.

    Returns
    -------
    decisions, funnel, thresholds : as :func:`~preprocessing.filters.decide`; decisions
        gain a ``split`` column.
    plans : ``[{"shard", "split", "keys"}, …]`` (:func:`~preprocessing.filters.plan_shards`).
    """
    decisions, funnel, thresholds = decide(detections, cfg)
    decisions["split"] = assign_split(decisions, cfg.split)
    plans = plan_shards(decisions[decisions["status"] == KEPT], cfg.shards.max_samples)
    return decisions, funnel, thresholds, plans


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
    items: list[InputItem], cfg: PrepareConfig, paths: ProjectPaths, out_dir: Path
) -> pd.DataFrame:
    """Pass 1: one detection row per item, chunk files reused when their fingerprint matches.

    The items to detect are written once to ``detections/inputs.parquet``, sorted by key,
    one row group per chunk of ``ray.chunk_size``; a task gets only its chunk's number and
    reads its rows from that file, and writes its results to ``chunk-NNNNNN.parquet``. The
    driver then reads the chunk files: no input or result row travels through Ray's object
    store or lives in the driver as a Python object.

    Parameters
    ----------
    items : all inputs; those a reader rejected get a row without measurements.
    cfg : prepare config (``ray.chunk_size``, detection settings).
    paths : project paths; the actors open ``paths.data_path(item.path)``.
    out_dir : the stage folder; chunks go to ``out_dir/detections``.

    Returns
    -------
    pd.DataFrame
        ``DETECTION_SCHEMA`` columns, one row per item (detected chunks first, by key).
    """
    chunk_dir = out_dir / "detections"
    specs, files = plan_detection(items, cfg, ModelStore(paths.models_dir), chunk_dir)
    log.info(
        "detection pass: %d chunks, %d already done, %d to run",
        len(files),
        len(files) - len(specs),
        len(specs),
    )
    _run_specs(specs, DetectFaces, {"cfg": cfg, "paths": paths}, cfg)
    return read_detections(files, items)


def plan_detection(
    items: list[InputItem], cfg: PrepareConfig, store: ModelStore, chunk_dir: Path
) -> tuple[list[dict], list[Path]]:
    """Write ``inputs.parquet`` (the items to detect, by key, one row group per chunk) and
    list the chunks still to run; stale chunk files are removed.

    Returns
    -------
    specs : ``{"chunk", "path", "fingerprint", "inputs"}`` per chunk to run
        (:class:`~preprocessing.detect_pass.DetectFaces`).
    files : every chunk's result file, in chunk order.
    """
    todo = sorted((i for i in items if i.reason is None), key=lambda i: i.key)
    table = pa.Table.from_arrays(
        [pa.array([getattr(i, f.name) for i in todo], f.type) for f in INPUT_SCHEMA],
        schema=INPUT_SCHEMA,
    )
    del todo
    chunk_dir.mkdir(parents=True, exist_ok=True)
    inputs = chunk_dir / "inputs.parquet"
    write_inputs(table, inputs, cfg.ray.chunk_size)
    size, keys = cfg.ray.chunk_size, table.column("key")
    specs, files = [], []
    for n, start in enumerate(range(0, len(table), size)):
        path = chunk_dir / f"chunk-{n:06d}.parquet"
        fp = detection_fingerprint(cfg, store, keys.slice(start, size).to_pylist())
        files.append(path)
        if not chunk_done(path, fp):
            specs.append({"chunk": n, "path": str(path), "fingerprint": fp, "inputs": str(inputs)})
    _remove_stale(chunk_dir, r"chunk-(\d+)\.parquet", lambda m: int(m.group(1)) < len(files))
    return specs, files


def read_detections(files: list[Path], items: list[InputItem]) -> pd.DataFrame:
    """The detection rows of every item: the chunk files, then the readers' rejections."""
    tables = [pq.read_table(f, schema=DETECTION_SCHEMA) for f in files]
    tables += _reader_rejections(items)
    if not tables:
        return DETECTION_SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def _reader_rejections(items: list[InputItem]) -> list[pa.Table]:
    """Detection rows (no measurements) of the items a reader already rejected."""
    rejected = [i for i in items if i.reason is not None]
    if not rejected:
        return []
    rows = [{**{f: None for f in DETECTION_SCHEMA.names}, **i.to_row()} for i in rejected]
    for r in rows:
        r.update(width=0, height=0, num_detections=0, num_faces=0, det_padded=False)
    return [pa.Table.from_pylist(rows, schema=DETECTION_SCHEMA)]


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
    models = [cfg.identity_model, FACEMESH_MODEL] + (
        list(BACKENDS[backend].requires) if backend else []
    )
    return {
        "annotate": cfg.annotate.model_dump(mode="json"),
        "shards": cfg.shards.model_dump(mode="json"),
        "max_image_pixels": cfg.max_image_pixels,
        "mask_backend": backend,
        "models": {m: store.spec(m).sha256 or file_sha256(store.path(m)) for m in models},
    }


#: The plans file's columns (:data:`SHARD_COLUMNS`, types of the manifest).
SHARD_SCHEMA = pa.schema([MANIFEST_SCHEMA.field(c) for c in SHARD_COLUMNS])


def plan_table(decisions: pd.DataFrame, plans: list[dict]) -> pa.Table:
    """The :data:`SHARD_COLUMNS` of every planned face, plans one after another."""
    keys = [k for p in plans for k in p["keys"]]
    rows = decisions.set_index("key").loc[keys, SHARD_COLUMNS[1:]].reset_index()
    return pa.Table.from_pandas(rows, schema=SHARD_SCHEMA, preserve_index=False)


def plan_fingerprints(table: pa.Table, plans: list[dict], settings: dict):
    """Each plan's fingerprint (:func:`shard_fingerprint` of its rows' JSON), in order."""
    start = 0
    for p in plans:
        rows = table.slice(start, len(p["keys"])).to_pylist()
        start += len(p["keys"])
        yield shard_fingerprint(json.dumps(rows), settings)


def write_all_shards(
    plans: list[dict],
    decisions: pd.DataFrame,
    cfg: PrepareConfig,
    paths: ProjectPaths,
    backend: str | None,
    shard_dir: Path,
) -> pd.DataFrame:
    """Pass 2: one task per shard plan; finished plans are read from their sidecars.

    The plans' rows are written once to ``shard_dir/plans.parquet`` (one row group per plan);
    a task gets the plan's number only.

    Parameters
    ----------
    plans : shard plans (:func:`preprocessing.filters.plan_shards`).
    decisions : the decisions table (kept rows with ``split``), indexed by position.
    cfg : prepare config.
    paths : project paths; the actors open ``paths.data_path(row["path"])``.
    backend : the resolved label-map backend name, or None.
    shard_dir : where the tars and sidecars go.

    Returns
    -------
    pd.DataFrame
        One outcome per face: ``key``, ``shard``, ``ok``, ``detail``, ``bytes``.
    """
    settings = shard_settings(cfg, ModelStore(paths.models_dir), backend)
    table = plan_table(decisions, plans)
    shard_dir.mkdir(parents=True, exist_ok=True)
    plans_file = shard_dir / PLANS_FILE
    write_plans(table, [len(p["keys"]) for p in plans], plans_file)
    done, specs = [], []
    for i, (p, fp) in enumerate(zip(plans, plan_fingerprints(table, plans, settings), strict=True)):
        outcomes = read_sidecar(shard_dir, p["shard"], fp)
        if outcomes is not None:
            done.extend(outcomes)
        else:
            spec = {"shard": p["shard"], "plan": i, "plans": str(plans_file), "fingerprint": fp}
            specs.append(spec)
    del table
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
    kwargs = {"cfg": cfg, "paths": paths, "shard_dir": str(shard_dir)}
    tables = _run_specs(specs, WriteShards, kwargs, cfg)
    frames = [t.to_pandas() for t in tables] + ([pd.DataFrame(done)] if done else [])
    if not frames:
        return pd.DataFrame(columns=["key", "shard", "ok", "detail", "bytes"])
    return pd.concat(frames, ignore_index=True)


def _merge_outcomes(
    decisions: pd.DataFrame, outcomes: pd.DataFrame, funnel: list[dict]
) -> pd.DataFrame:
    """Shard of every kept face; faces pass 2 failed on become ``annotate_error`` rows,
    counted as the funnel's ``annotated`` step (appended to ``funnel``)."""
    df = decisions.copy()
    df["shard"] = None
    if len(outcomes):
        out = outcomes.drop_duplicates("key").set_index("key")
        df["shard"] = df["key"].map(out["shard"])
        failed = df["key"].map(out["ok"]).eq(False)
        df.loc[failed, "status"] = REJECTED
        df.loc[failed, "reason"] = Reason.ANNOTATE_ERROR.value
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
    """Write ``manifest.parquet`` (:data:`MANIFEST_SCHEMA`, sorted by key); returns its rows."""
    df = decisions.sort_values("key", kind="stable").reset_index(drop=True)
    table = pa.Table.from_pandas(
        df[MANIFEST_SCHEMA.names], schema=MANIFEST_SCHEMA, preserve_index=False
    )
    pq.write_table(table, out_dir / "manifest.parquet")
    return df


def _identity_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Kept faces per identity ("" for unlabelled), sorted by identity."""
    return {k: int(v) for k, v in rows["identity"].fillna("").value_counts().sort_index().items()}


def _shard_file(shard: str) -> str:
    """A shard's tar, relative to the stage folder."""
    return f"{SHARD_DIR}/{shard}.tar"


def _shard_index(kept: pd.DataFrame, outcomes: pd.DataFrame) -> dict[str, ShardInfo]:
    """Split, size and identities of every shard file."""
    ok = outcomes[outcomes["ok"].astype(bool)] if len(outcomes) else outcomes
    bytes_per = ok.groupby("shard")["bytes"].sum().to_dict() if len(ok) else {}
    return {
        _shard_file(shard): ShardInfo(
            split=group["split"].iloc[0],
            num_samples=len(group),
            bytes=int(bytes_per.get(shard, 0)),
            identities=_identity_counts(group),
        )
        for shard, group in kept.groupby("shard")
    }


def _splits(kept: pd.DataFrame) -> dict[str, SplitInfo]:
    """Shards, size and identities of every split."""
    return {
        split: SplitInfo(
            shards=sorted(_shard_file(s) for s in group["shard"].unique()),
            num_samples=len(group),
            identities=_identity_counts(group),
        )
        for split, group in kept.groupby("split")
    }


def _annotations(cfg: PrepareConfig, models: StageModels) -> dict:
    """The card's ``annotations``: sample files (:func:`describe_files`), mask model, crops."""
    primary, backend = cfg.annotate.crops[0], models.mask_backend
    files = describe_files(
        template=primary.template,
        size=primary.size,
        extra_crops=[(c.name, c.template, c.size) for c in cfg.annotate.crops[1:]],
        id_dim=models.embedding_dim,
        landmarks_468=cfg.annotate.landmarks_468,
        backend=backend,
        regions=list(REGION_NAMES),
    )
    mask_model = None
    if backend:
        name = BACKENDS[backend].requires[0]
        mask_model = {"name": name, "sha256": models.store.spec(name).sha256}
    return {
        "files": files,
        "mask_backend": backend,
        "mask_model": mask_model,
        "crops": [c.model_dump() for c in cfg.annotate.crops],
    }


def _rejections(manifest: pd.DataFrame) -> dict[str, int]:
    """Rejected inputs per reason, sorted by reason."""
    counts = manifest.loc[manifest.status == REJECTED, "reason"].value_counts().sort_index()
    return {str(k): int(v) for k, v in counts.items()}


def _dataset_card(
    cfg: PrepareConfig,
    models: StageModels,
    manifest: pd.DataFrame,
    funnel: list[dict],
    thresholds: dict,
    outcomes: pd.DataFrame,
) -> DatasetCard:
    """The dataset card of a finished run."""
    kept = manifest[manifest["status"] == KEPT]
    primary = cfg.annotate.crops[0]
    return DatasetCard(
        num_inputs=len(manifest),
        num_samples=len(kept),
        splits=_splits(kept),
        crop=CropInfo(template=primary.template, size=primary.size),
        embedding=EmbeddingInfo(
            name=cfg.identity_model,
            sha256=models.store.spec(cfg.identity_model).sha256,
            dim=models.embedding_dim,
        ),
        detector=ModelRef(name=cfg.detection.model, sha256=models.detector_sha256),
        funnel=funnel,
        thresholds=thresholds,
        annotations=_annotations(cfg, models),
        shard_index=_shard_index(kept, outcomes),
        rejections=_rejections(manifest),
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

    tracker = Tracker([MlflowSink(paths, f"prepare-{time.strftime('%Y%m%d-%H%M%S')}")])
    tracker.set_tags({"stage": "prepare"})
    tracker.log_params(flatten({"prepare": cfg.model_dump(mode="json")}))
    counts = {f"Data/{s['step']}_remaining": s["remaining"] for s in card.funnel}
    tracker.log_summary(
        {**counts, "Data/kept": card.num_samples, "Data/inputs": card.num_inputs, **timings}, step=0
    )
    for path in [*report, out_dir / "dataset.json"]:
        tracker.log_artifact(path, "prepare")
    tracker.close()
