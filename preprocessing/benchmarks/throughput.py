"""Throughput of the prepare job against a naive per-image loop: batched inference, one
image per model call, and Ray scaling.

    python -m preprocessing.benchmarks.throughput [--limit N] [--with-celebamask]
        [--actors 1,2] [--batch-sizes 1,32]

Measurements on the same images, in one run, printed as a table:

* ``naive``: one process, one image at a time, InsightFace ``FaceAnalysis`` style: decode →
  SCRFD at 640 → FSA-Net pose → align (ArcFace 112 + the configured crops) → embed →
  FaceMesh → label map, every model called per face with onnxruntime/torch default
  threading (all cores).
* ``ray xN, batch B``: the prepare job's two passes (:func:`preprocessing.prepare.detect_all`
  and :func:`preprocessing.prepare.write_all_shards`) with N actors of one thread each and
  ``prepare.ray.batch_size`` B (images or faces per model call; B = 1 calls every model once
  per image, as pass 1 did before batching), producing the same annotations plus shards; Ray
  start-up is excluded, actor start-up is included.

Figures: faces/s, faces/s per core used, and the peak resident memory of one worker
(psutil, sampled every 0.2 s: the naive process, or the largest Ray map worker).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from infra.config import build
from infra.paths import PathsConfig, ProjectPaths


class RssSampler:
    """Peak RSS and USS (bytes) of processes matching a predicate, sampled in a thread.

    USS (unique set size) leaves out pages shared with other processes, such as Ray's
    object store, so it is the memory one more worker would add. Reading it walks
    ``/proc/<pid>/smaps`` and slows the measured process, so it is sampled only every
    ``uss_every`` RSS samples (RSS every ``interval`` seconds is cheap)."""

    def __init__(self, match, interval: float = 0.2, uss_every: int = 15):
        self.match, self.interval, self.uss_every = match, interval, uss_every
        self.peak = self.peak_uss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            tick += 1
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if self.match(p):
                        self.peak = max(self.peak, p.memory_info().rss)
                        if tick % self.uss_every == 0:
                            self.peak_uss = max(self.peak_uss, p.memory_full_info().uss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _naive_worker(paths: list[str], models_dir: str, crops: list[dict], backend: str, out) -> None:
    """The naive loop (runs in a fresh process so its peak RSS is its own)."""
    import cv2
    import numpy as np
    from insightface.model_zoo import get_model

    from infra.models import ModelStore
    from preprocessing.align import align_face
    from preprocessing.annotate import resolve_mask_backend
    from preprocessing.facemesh import FaceMesh
    from preprocessing.headpose import HeadPose

    store = ModelStore(models_dir)
    det = get_model(str(store.path("scrfd_2.5g_bnkps")))
    det.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    rec = get_model(str(store.path("mobilefacenet_128d")))
    pose = HeadPose(store, threads=0)
    mesh = FaceMesh(store, threads=0)
    parser = resolve_mask_backend(backend, store, threads=os.cpu_count())
    t0, faces = time.perf_counter(), 0
    for p in paths:
        bgr = cv2.imread(p)
        if bgr is None:
            continue
        boxes, kps = det.detect(bgr, max_num=0)
        if len(boxes) == 0:
            continue
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        pose.predict(rgb, boxes[0, :4])
        face112, _ = align_face(bgr, kps[0], 112)
        rec.get_feat([face112])
        for c in crops:
            align_face(rgb, kps[0], c["size"], c["template"])
        lm = mesh.predict(rgb, boxes[0, :4])
        if parser is not None:
            crop, _ = align_face(rgb, kps[0], parser.crop_size, parser.crop_template)
            parser.parse(crop[None], None)
        faces += 1
    out.put((faces, time.perf_counter() - t0, lm.shape))


def run_naive(paths: list[str], models_dir: Path, crops: list[dict], backend: str) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_naive_worker, args=(paths, str(models_dir), crops, backend, q))
    with RssSampler(lambda p: p.info["pid"] == proc.pid) as rss:
        proc.start()
        faces, seconds, _ = q.get()
        proc.join()
    cores = os.cpu_count()
    return {
        "name": "naive (1 process, default threads)",
        "faces": faces,
        "seconds": seconds,
        "cores": cores,
        "peak_rss": rss.peak,
        "peak_uss": rss.peak_uss,
    }


def run_ray(cfg_dict: dict, paths: ProjectPaths, actors: int, items, batch: int) -> dict:
    import pandas as pd

    from infra.models import ModelStore
    from infra.raycluster import ray_session
    from preprocessing.annotate import resolve_mask_backend
    from preprocessing.config import PrepareConfig
    from preprocessing.filters import assign_split, decide, plan_shards
    from preprocessing.prepare import detect_all, write_all_shards

    cfg = build(
        PrepareConfig,
        {
            **cfg_dict,
            "ray": {
                **cfg_dict["ray"],
                "num_actors": actors,
                "cpus_per_actor": 0.5,
                "threads_per_actor": 1,
                "batch_size": batch,
            },
        },
        "prepare",
    )
    store = ModelStore(paths.models_dir)
    backend = resolve_mask_backend(cfg.annotate.mask_backend, store)
    backend = backend.name if backend else None
    with tempfile.TemporaryDirectory() as tmp, ray_session(num_cpus=2):
        out = Path(tmp)
        match = lambda p: any("MapWorker" in a for a in (p.info["cmdline"] or []))  # noqa: E731
        with RssSampler(match) as rss:
            t0 = time.perf_counter()
            det = detect_all(items, cfg, paths, out)
            t1 = time.perf_counter()
            dec, _, _ = decide(det, cfg)
            dec["split"] = assign_split(dec, cfg.split)
            plans = plan_shards(dec[dec.status == "kept"], cfg.shards.max_samples)
            res = write_all_shards(plans, dec, cfg, paths, backend, out / "shards")
            t2 = time.perf_counter()
    faces = int(pd.Series(res["ok"]).sum())
    return {
        "name": f"ray x{actors}, batch {batch} (1 thread/actor)",
        "faces": faces,
        "seconds": t2 - t0,
        "cores": min(actors, os.cpu_count()),
        "peak_rss": rss.peak,
        "peak_uss": rss.peak_uss,
        "detail": f"pass 1 {t1 - t0:.1f} s, pass 2 {t2 - t1:.1f} s, {len(det)} images",
        "actors": actors,
        "batch": batch,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--limit", type=int, default=0, help="first N images of the CSV (0 = all)")
    ap.add_argument("--actors", default="1,2", help="Ray actor counts to measure")
    ap.add_argument(
        "--batch-sizes", default="1,32", help="prepare.ray.batch_size values to measure"
    )
    ap.add_argument(
        "--with-celebamask",
        action="store_true",
        help="add the 800 CelebAMask-HQ images of data_root (a longer, steady-state run)",
    )
    args = ap.parse_args(argv)

    import yaml

    from preprocessing.config import PrepareConfig, SourceConfig
    from preprocessing.sources import read_sources

    params = yaml.safe_load(Path(args.params).read_text())
    paths = ProjectPaths.resolve(
        build(PathsConfig, params.get("paths"), "paths"), Path(args.params).resolve().parent
    )
    cfg_dict = params["prepare"]
    cfg_dict["shards"] = {**cfg_dict.get("shards", {}), "max_samples": 16}
    cfg_dict["ray"] = {**cfg_dict.get("ray", {}), "chunk_size": 16}
    cfg = build(PrepareConfig, cfg_dict, "prepare")
    sources = [SourceConfig(**s.model_dump()) for s in cfg.sources]
    if args.with_celebamask:
        chq = "celebamask_hq_ce7454_train"
        extra = {
            "name": "celebamask",
            "kind": "celebahq",
            "path": f"{chq}/images",
            "masks": f"{chq}/masks",
        }
        sources.append(SourceConfig(**extra))
        cfg_dict["sources"] = [*cfg_dict["sources"], extra]
    items = read_sources(sources, paths)
    if args.limit:
        items = items[: args.limit]
    crops = [c.model_dump() for c in cfg.annotate.crops]
    print(
        f"{len(items)} images; annotate: crops {[c['template'] + str(c['size']) for c in crops]}, "
        f"mask backend {cfg.annotate.mask_backend}, FaceMesh {cfg.annotate.landmarks_468}"
    )

    files = [str(paths.data_path(i.path)) for i in items]
    rows = [run_naive(files, paths.models_dir, crops, cfg.annotate.mask_backend)]
    for n in [int(a) for a in args.actors.split(",")]:
        for b in [int(x) for x in args.batch_sizes.split(",")]:
            rows.append(run_ray(cfg_dict, paths, n, items, b))
    base = rows[0]["faces"] / rows[0]["seconds"] / rows[0]["cores"]
    print(
        f"\n{'run':<42}{'faces':>6}{'s':>8}{'faces/s':>9}{'/core':>8}{'x naive/core':>14}"
        f"{'peak RSS / USS per worker':>27}"
    )
    for r in rows:
        fps = r["faces"] / r["seconds"]
        per_core = fps / r["cores"]
        print(
            f"{r['name']:<42}{r['faces']:>6}{r['seconds']:>8.1f}{fps:>9.2f}{per_core:>8.2f}"
            f"{per_core / base:>14.2f}{r['peak_rss'] / 2**20:>14.0f}"
            f" / {r['peak_uss'] / 2**20:.0f} MiB"
            f"   {r.get('detail', '')}"
        )
    _ratios(rows)


def _ratios(rows: list[dict]) -> None:
    """Batched / batch-1 at each actor count, and 1 → 2 actors at each batch size."""
    fps = {r["name"]: r["faces"] / r["seconds"] for r in rows}
    runs = {(r["actors"], r["batch"]): fps[r["name"]] for r in rows if "actors" in r}
    for (n, b), v in sorted(runs.items()):
        if b != 1 and (n, 1) in runs:
            print(f"ray x{n}: batch {b} / batch 1 = {v / runs[(n, 1)]:.2f}x")
        if n == 2 and (1, b) in runs:
            print(f"batch {b}: 2 actors / 1 actor = {v / runs[(1, b)]:.2f}x")


if __name__ == "__main__":
    main()
