"""The prepare driver at VGGFace2 size, without decoding an image: wall time and peak memory.

    python -m preprocessing.benchmarks.driver_scale [--inputs 3310000] [--identities 9131]

Builds VGGFace2-shaped inputs synthetically — an identity CSV of ``--inputs`` rows over
``--identities`` identities (0.1 % of the rows listed twice) and a detection table of the
same size in the detection pass's schema (random image sizes, pHashes with 2 % near
duplicates inside an identity, 8 % without a face or with two, poses, boxes, landmarks) —
and runs everything the driver does around the two Ray passes, each step timed:
listing (:func:`preprocessing.sources.read_sources`, listed-twice entries), planning the
detection pass (:func:`preprocessing.prepare.plan_detection`: ``inputs.parquet`` and the
chunk fingerprints), reading the detection chunks back
(:func:`preprocessing.prepare.read_detections`; the chunk files are written here as the
actors would write them, untimed), the filter funnel with duplicate entries and
near-duplicate grouping, the identity split and shard planning
(:func:`preprocessing.prepare.filter_and_plan`), ``plans.parquet`` and the plans'
fingerprints (what the shard pass does before it starts a task), the manifest, the
dataset card and the funnel report. Settings are ``params.yaml: prepare`` with the default
shard and chunk sizes.
Prints seconds per step, the total and the peak resident memory (goal for VGGFace2 on a
2-core machine: under 10 minutes and 8 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute

from infra.config import load_stage
from preprocessing.config import PrepareConfig, SourceConfig
from preprocessing.detect_pass import write_chunk
from preprocessing.funnel_report import write_funnel
from preprocessing.prepare import (
    _dataset_card,
    _merge_outcomes,
    _write_manifest,
    check_models,
    filter_and_plan,
    plan_detection,
    plan_fingerprints,
    plan_table,
    read_detections,
    shard_settings,
    split_listed_twice,
)
from preprocessing.records import DETECTION_SCHEMA
from preprocessing.shard_pass import write_plans
from preprocessing.sources import read_sources


def peak_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_identity_csv(path: Path, n: int, identities: int, seed: int = 0) -> int:
    """``path,identity`` rows ``n<id>/<i>_01.jpg`` (VGGFace2 names), 0.1 % repeated;
    returns the row count."""
    rng = np.random.default_rng(seed)
    ident = np.sort(rng.integers(0, identities, n))
    first = np.searchsorted(ident, ident)  # index of the identity's first row
    idx = np.arange(n) - first
    names = pd.Series(ident).map("n{:06d}".format)
    rel = names + "/" + pd.Series(idx).map("{:04d}_01.jpg".format)
    df = pd.DataFrame({"path": rel, "identity": names})
    df = pd.concat([df, df.sample(frac=0.001, random_state=seed)], ignore_index=True)
    df.to_csv(path, index=False)
    return len(df)


def detection_table(items, seed: int = 0) -> pa.Table:
    """The detection pass's rows for ``items`` (:data:`DETECTION_SCHEMA`), synthetic."""
    rng = np.random.default_rng(seed)
    n = len(items)
    cols = {f: [getattr(i, f) for i in items] for f in ("key", "source", "path", "listed")}
    cols |= {"identity": [i.identity for i in items], "mask_path": [None] * n}
    cols["reason"] = [i.reason.value if i.reason else None for i in items]
    cols["detail"] = [i.detail or None for i in items]
    w = rng.integers(180, 500, n).astype(np.int32)
    h = (w * rng.uniform(1.0, 1.4, n)).astype(np.int32)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64)
    near = np.flatnonzero(rng.random(n) < 0.02)
    near = near[near > 0]
    hashes[near] = hashes[near - 1] ^ (1 << rng.integers(0, 63, len(near)))  # 1 bit apart
    faces = rng.choice([0, 1, 2], n, p=[0.04, 0.92, 0.04]).astype(np.int32)
    side = (w * rng.uniform(0.15, 0.6, n)).astype(np.float32)
    box = np.stack([w * 0.3, h * 0.3, w * 0.3 + side, h * 0.3 + side], 1).astype(np.float32)
    lmk = rng.uniform(0, 1, (n, 10)).astype(np.float32) * np.repeat(side[:, None], 10, 1)
    cols |= {
        "width": w,
        "height": h,
        "phash": [f"{v:016x}" for v in hashes],
        "num_detections": faces,
        "num_faces": faces,
        "det_padded": np.zeros(n, bool),
        "det_score": rng.uniform(0.5, 1.0, n).astype(np.float32),
        "face_size": side,
        "bbox": pa.FixedSizeListArray.from_arrays(box.ravel(), 4),
        "landmarks": pa.FixedSizeListArray.from_arrays(lmk.ravel(), 10),
        "yaw": rng.normal(0, 25, n).astype(np.float32),
        "pitch": rng.normal(0, 12, n).astype(np.float32),
        "roll": rng.normal(0, 8, n).astype(np.float32),
        "eye_roll": rng.normal(0, 8, n).astype(np.float32),
    }
    arrays = [
        pa.array(cols[f.name], type=f.type)
        if not isinstance(cols[f.name], pa.Array)
        else cols[f.name].cast(f.type)
        for f in DETECTION_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=DETECTION_SCHEMA)


def write_chunks(items, specs: list[dict], chunk_size: int) -> None:
    """Write synthetic detection chunk files where the actors would (by key, as planned).
    The rows are made in listing order, so near-duplicate pHashes fall inside an identity."""
    table = detection_table([i for i in items if i.reason is None])
    table = table.take(pa.compute.sort_indices(table, [("key", "ascending")]))
    for spec in specs:
        rows = table.slice(spec["chunk"] * chunk_size, chunk_size)
        write_chunk(rows, Path(spec["path"]), spec["fingerprint"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--inputs", type=int, default=3_310_000)
    ap.add_argument("--identities", type=int, default=9_131)
    args = ap.parse_args(argv)
    base, paths = load_stage(PrepareConfig, "prepare", Path(args.params))
    times: dict[str, float] = {}

    def step(name: str, t0: float) -> float:
        times[name] = time.perf_counter() - t0
        print(f"{name:<34} {times[name]:8.1f} s   peak {peak_gb():5.2f} GB", flush=True)
        return time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = tmp / "train_list.csv"
        rows = write_identity_csv(csv, args.inputs, args.identities)
        print(f"{rows} CSV rows over {args.identities} identities (peak {peak_gb():.2f} GB)")
        source = SourceConfig(name="vggface2", kind="identity_csv", path=str(csv))
        # the shard size of the defaults, not the sample data's small one in params.yaml
        shards = type(base.shards)()
        chunk = type(base.ray).model_fields["chunk_size"].default
        ray_cfg = base.ray.model_copy(update={"chunk_size": chunk})
        cfg = base.model_copy(update={"sources": [source], "shards": shards, "ray": ray_cfg})
        print(
            f"shards: {shards.max_samples} samples / {shards.max_bytes / 1e9:g} GB at most; "
            f"detection chunks of {chunk} inputs"
        )
        models = check_models(cfg, paths)
        t = time.perf_counter()
        items = split_listed_twice(read_sources(cfg.sources, paths))
        t = step("listing + listed twice", t)
        chunk_dir = tmp / "detections"
        specs, files = plan_detection(items, cfg, models.store, chunk_dir)
        t = step(f"detection plan ({len(files)} chunks)", t)
        write_chunks(items, specs, cfg.ray.chunk_size)
        t = time.perf_counter()
        detections = read_detections(files, items)
        del items
        t = step("detection chunks → table", t)
        decisions, funnel, thresholds, plans = filter_and_plan(detections, cfg)
        del detections
        t = step("funnel + split + shard plans", t)
        settings = shard_settings(cfg, models.store, models.mask_backend)
        table = plan_table(decisions, plans)
        write_plans(table, [len(p["keys"]) for p in plans], tmp / "plans.parquet")
        prints = list(plan_fingerprints(table, plans, settings))
        del table
        t = step(f"plans.parquet + {len(prints)} fingerprints", t)
        outcomes = pd.DataFrame(
            [
                {"key": k, "shard": p["shard"], "ok": True, "detail": "", "bytes": 40_000}
                for p in plans
                for k in p["keys"]
            ]
        )
        manifest = _write_manifest(_merge_outcomes(decisions, outcomes, funnel), tmp)
        t = step("outcomes + manifest.parquet", t)
        card = _dataset_card(cfg, models, manifest, funnel, thresholds, outcomes)
        card.save(tmp)
        write_funnel(funnel, tmp)
        step("dataset card + funnel report", t)
        size = (tmp / "manifest.parquet").stat().st_size / 1e6
    print(
        f"total {sum(times.values()):.1f} s, peak {peak_gb():.2f} GB; {card.num_inputs} manifest "
        f"rows ({size:.0f} MB), {card.num_samples} kept, {len(plans)} shard plans; funnel "
        + json.dumps({f["step"]: f["rejected"] for f in funnel})
    )


if __name__ == "__main__":
    main()
