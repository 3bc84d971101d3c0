"""Pass 2 of ``prepare``: annotate the kept faces and write WebDataset shards.

The driver writes every plan's rows once to ``shards/plans.parquet`` (one row group per
plan, :func:`write_plans`); a task gets the plan's number and reads its rows from there.
One task per shard plan. Faces are annotated in mini-batches (batched embedding and
parsing) and written in plan order; a shard that would pass ``shards.max_bytes`` rolls
over to ``<plan>-1.tar``, ``<plan>-2.tar``…. Tars are written to temporary names and
renamed; a sidecar ``<plan>.json`` (written last) records the files, the per-face outcomes
and a fingerprint of everything the shard depends on, so a rerun skips finished shards
and a killed run never leaves a half shard that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from infra.ort import require_cuda
from infra.paths import ProjectPaths
from preprocessing.annotate import FaceAnnotator
from preprocessing.config import PrepareConfig

OUTCOME_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("ok", pa.bool_()),
        ("detail", pa.string()),
        ("bytes", pa.int64()),
    ]
)


#: The plans' rows, relative to the shard folder.
PLANS_FILE = "plans.parquet"


def write_plans(table: pa.Table, sizes: list[int], path: Path) -> None:
    """Write the plans' rows (``table``, plans one after another, ``sizes`` rows each) as
    one row group per plan, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, table.schema) as writer:
        start = 0
        for n in sizes:
            writer.write_table(table.slice(start, n), row_group_size=max(n, 1))
            start += n
    os.replace(tmp, path)


def read_plan(path: Path, plan: int) -> list[dict]:
    """Plan ``plan``'s rows as plain dicts (what :func:`write_plans` wrote)."""
    return pq.ParquetFile(path).read_row_group(plan).to_pylist()


def shard_fingerprint(plan_rows: str, settings: dict) -> str:
    """Hash of a shard plan's rows (JSON) and the settings/models its content depends on."""
    payload = json.dumps({"rows": plan_rows, "settings": settings}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()


def read_sidecar(shard_dir: Path, plan: str, fingerprint: str) -> list[dict] | None:
    """Outcomes of a finished shard plan with this fingerprint, else None."""
    path = shard_dir / f"{plan}.json"
    try:
        side = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if side.get("fingerprint") != fingerprint:
        return None
    if not all((shard_dir / f).is_file() for f in side.get("files", [])):
        return None
    return side["outcomes"]


def _failed(key: str, error: Exception) -> dict:
    """The outcome row of a face that could not be annotated."""
    detail = f"{type(error).__name__}: {error}"
    return {"key": key, "shard": None, "ok": False, "detail": detail, "bytes": 0}


class ShardWriteError(OSError):
    """A shard could not be written (the message names the shard and the cause)."""


class WriteShards:
    """Callable class for ``Dataset.map_batches`` over shard plans
    (``{"shard", "plan", "plans", "fingerprint"}``: the plan's number, the plans file).

    Parameters
    ----------
    cfg : prepare config.
    paths : project paths (models; rows' paths resolve against ``paths.data_root``).
    shard_dir : folder the tars and sidecars are written to.
    """

    def __init__(self, cfg: PrepareConfig, paths: ProjectPaths, shard_dir: str):
        self.cfg = cfg
        self.shard_dir = Path(shard_dir)
        if cfg.ray.device == "cuda":
            require_cuda()
        self.annotator = FaceAnnotator(
            cfg, paths, cfg.ray.threads_per_actor, cfg.ray.device == "cuda"
        )

    def _annotated(self, rows: list[dict], outcomes: list[dict]):
        """Yield annotated faces in plan order, ``cfg.ray.model_batch`` faces per model call;
        failures go to ``outcomes``. When a model fails on a batch, its faces are annotated
        one by one so only the face that fails is recorded as failed."""
        size = self.cfg.ray.model_batch
        for i in range(0, len(rows), size):
            batch = []
            for row in rows[i : i + size]:
                try:
                    batch.append(self.annotator.prepare_one(row))
                except Exception as e:
                    outcomes.append(_failed(row["key"], e))
            try:
                self.annotator.finish(batch)
            except Exception:
                done = []
                for ann in batch:
                    try:
                        self.annotator.finish([ann])
                        done.append(ann)
                    except Exception as e:
                        outcomes.append(_failed(ann.key, e))
                batch = done
            yield from batch

    def write(self, plan: dict) -> list[dict]:
        """Write one shard plan (possibly several tars); returns one outcome per key.

        Raises
        ------
        ShardWriteError : writing failed (disk full, I/O error): the plan's temporary tars
            are removed, so no partial tar is left under any name, and a rerun writes the
            plan again (finished plans are kept, :func:`read_sidecar`).
        """
        files: list[str] = []
        try:
            return self._write(plan, files)
        except OSError as e:
            for name in files:
                (self.shard_dir / (name + ".tmp")).unlink(missing_ok=True)
            (self.shard_dir / f"{plan['shard']}.json.tmp").unlink(missing_ok=True)
            shard = files[-1] if files else f"{plan['shard']}.tar"
            raise ShardWriteError(
                f"writing shard {shard} in {self.shard_dir} failed: {e.strerror or e}; nothing "
                "of it was kept: free space (or fix the disk) and rerun prepare, finished "
                "shards are kept"
            ) from e

    def _write(self, plan: dict, files: list[str]) -> list[dict]:
        """:meth:`write`; ``files`` collects the tar names as they are opened."""
        rows = read_plan(Path(plan["plans"]), plan["plan"])
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        outcomes: list[dict] = []
        sink = f = None
        size = 0
        try:
            for ann in self._annotated(rows, outcomes):
                sample = ann.encode(self.cfg.annotate.jpeg_quality)
                nbytes = sum(len(v) + 1024 for k, v in sample.items() if k != "__key__")
                if sink is None or (size and size + nbytes > self.cfg.shards.max_bytes):
                    if sink is not None:
                        sink.close()
                        f.close()
                    name = plan["shard"] + (f"-{len(files)}" if files else "") + ".tar"
                    files.append(name)
                    f = open(self.shard_dir / (name + ".tmp"), "wb")  # noqa: SIM115 - finally
                    sink = wds.TarWriter(f, encoder=False, mtime=0.0)
                    size = 0
                sink.write(sample)
                size += nbytes
                shard = files[-1][:-4]
                outcomes.append(
                    {"key": ann.key, "shard": shard, "ok": True, "detail": "", "bytes": nbytes}
                )
            if sink is not None:
                sink.close()
        finally:
            if f is not None:
                with contextlib.suppress(OSError, ValueError):
                    sink.close()  # after a write error: end the tar stream, which fails again
                f.close()
        for name in files:
            os.replace(self.shard_dir / (name + ".tmp"), self.shard_dir / name)
        side = {
            "fingerprint": plan["fingerprint"],
            "files": files,
            "outcomes": outcomes,
            "mask_backend": self.annotator.mask_backend_name,
        }
        tmp = self.shard_dir / f"{plan['shard']}.json.tmp"
        tmp.write_text(json.dumps(side))
        os.replace(tmp, self.shard_dir / f"{plan['shard']}.json")
        return outcomes

    def __call__(self, batch: pa.Table) -> pa.Table:
        outcomes = [o for plan in batch.to_pylist() for o in self.write(plan)]
        return pa.Table.from_pylist(outcomes, schema=OUTCOME_SCHEMA)
